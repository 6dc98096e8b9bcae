"""Tests of the native kernels; helper modules of this directory are importable by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
