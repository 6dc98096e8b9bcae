"""The committed gRPC stubs are exactly what `make proto` generates from proto/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "python" / "kefu" / "plugins" / "_proto"


def test_generated_stubs_have_not_drifted(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto.sh"), sys.executable, str(tmp_path / "out")],
                   check=True, cwd=ROOT)
    generated = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    assert generated == committed, "run `make proto` and commit the result"


def test_stubs_import_and_round_trip() -> None:
    from kefu.plugins._proto import plugin_pb2, plugin_pb2_grpc

    event = plugin_pb2.Event(event_id="e1", kind=plugin_pb2.EVENT_KIND_MESSAGE_CREATED, conv=7,
                             message=plugin_pb2.Message(seq=3, text="你好"))
    assert plugin_pb2.Event.FromString(event.SerializeToString()) == event
    assert hasattr(plugin_pb2_grpc, "PluginStub") and hasattr(plugin_pb2_grpc, "PluginServicer")
