"""Pure-Python reference twins of the native kernels: slow, obvious, and compared with native in tests."""
