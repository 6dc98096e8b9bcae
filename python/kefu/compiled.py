"""The one module that imports Kefu's compiled extensions.

Everything else in Kefu reaches native code through the names below: `kefu._native` (Rust, PyO3,
built by maturin from native/) and `kefu_engine` (Cython over picows, built from engine/).
Each native kernel has a pure-Python reference twin under `kefu.reference`; tests compare them.
A missing build raises ImportError here: Kefu never falls back to the slow twin silently.
"""

from __future__ import annotations

from kefu import _native
from kefu_engine import gateway as _gateway

NATIVE_VERSION: str = _native.__version__

# --- frame codec (native/codec) -------------------------------------------------------------------

# --- lock-free MPMC queue (native/queue) ----------------------------------------------------------

# --- routing scorer (native/routing) --------------------------------------------------------------

# --- sentiment featuriser (native/textfeat) -------------------------------------------------------

# --- WebSocket gateway (engine/) ------------------------------------------------------------------
