"""Builds the Cython extensions of kefu-engine; the metadata is in pyproject.toml."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# KEFU_ENGINE_DEBUG=1 keeps bounds checks and line tracing, for debugging crashes in the hot path.
debug = os.environ.get("KEFU_ENGINE_DEBUG") == "1"
directives = {
    "language_level": "3",
    "embedsignature": True,
    "boundscheck": debug,
    "wraparound": debug,
    "cdivision": not debug,
    "initializedcheck": debug,
}

extensions = [
    Extension("kefu_engine.gateway", ["src/kefu_engine/gateway.pyx"], extra_compile_args=["-O2"]),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, build_dir="build/cython"))
