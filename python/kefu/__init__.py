"""Kefu: self-hosted, high-performance live chat for customer service."""

__version__ = "0.1.0"
