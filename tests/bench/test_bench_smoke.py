"""The bench suite keeps working: every scenario runs for about a second against every server.

No timing is asserted (benchmarks measure, tests check behaviour): the run must exit 0, write each
scenario's report with its table filled, the summary, and the latency plot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

EXPECTED_TABLES = {
    "loadgen.md": "| in flight per conn | round trips/s |",
    "chat.md": "| server | offered msg/s | acked msg/s |",
    "supervisor.md": "| server | offered msg/s | acked msg/s | delivered to supervisor /s |",
    "idle.md": "| server | requested | open | failed | server KiB/conn |",
    "storm.md": "| server | clients | reconnected |",
    "coldstart.md": "| server | runs |",
}
PEERS = ("go-hub", "websockets", "aiohttp")


@pytest.mark.bench
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_smoke_run_writes_every_report(tmp_path: Path) -> None:
    env = {**os.environ, "KEFU_BENCH_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--no-micro", "--results-dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=230, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, header in EXPECTED_TABLES.items():
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert header in text, f"{name} lacks its table:\n{text[:2000]}"
        assert "## Machine" in text
    for name in ("chat.md", "supervisor.md", "idle.md", "storm.md"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        for peer in PEERS:
            assert f"| {peer} |" in text, f"{name} has no row for {peer}"
    chat = (tmp_path / "chat.md").read_text(encoding="utf-8")
    go_row = next(line for line in chat.splitlines() if line.startswith("| go-hub | 200 |"))
    acked_cell = go_row.split("|")[3].strip()
    assert acked_cell not in ("–", "0"), f"go-hub acked nothing: {go_row}"
    summary = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "## docs/design.md targets" in summary
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")
