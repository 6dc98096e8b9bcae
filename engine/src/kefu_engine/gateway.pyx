# cython: freethreading_compatible = False
"""Placeholder: replaced by the gateway listener."""
from picows.picows cimport WSListener

cdef class Probe(WSListener):
    pass
