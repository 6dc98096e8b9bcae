"""Type stubs for the compiled `kefu._native` module (native/src). Import it only via `kefu.compiled`."""

__version__: str

# --- frame codec ---

# --- MPMC queue ---

# --- routing scorer ---

# --- sentiment featuriser ---
