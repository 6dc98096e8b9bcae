"""Helpers every bench module shares: describe the machine, write a report.

Kept deliberately small (two functions): each `python -m bench.<name>` module measures its own
thing and calls `write_report(name, markdown)` with a body that describes `machine_info()`.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

# KEFU_BENCH_RESULTS_DIR redirects reports (the smoke test writes into a temporary directory).
RESULTS_DIR = Path(os.environ.get("KEFU_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")

_VERSIONED_PACKAGES = ("kefu", "kefu-engine", "picows", "uvloop", "websockets", "aiohttp", "msgpack", "numpy")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _go_version() -> str | None:
    try:
        out = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().removeprefix("go version ") or None


def machine_info() -> dict[str, object]:
    """Describe the machine and software a measurement ran on (for the report header)."""
    versions: dict[str, str] = {}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    go = _go_version()
    if go:
        versions["go"] = go
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def write_report(name: str, markdown: str) -> Path:
    """Write `bench/results/<name>.md` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown if markdown.endswith("\n") else markdown + "\n", encoding="utf-8")
    return path
