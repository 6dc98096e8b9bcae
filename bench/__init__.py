"""Benchmarks: `python -m bench.<name>` writes bench/results/<name>.md (see bench/common.py)."""
