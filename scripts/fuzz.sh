#!/usr/bin/env bash
# Fuzz the frame decoder (native/fuzz, target `decode_frame`) for FUZZ_SECONDS (default 60), then the
# data plane's typed parser (target `parse_client_frame`, JSON and binary) for as long again.
# Usage: scripts/fuzz.sh [SECONDS]   (also `make fuzz FUZZ_SECONDS=...`). See docs/fuzzing.md.
#
# Seeds: the attack corpus tests/native/corpus/codec/*.hex (decoded to binary) plus a few valid frames,
# written into native/fuzz/corpus/decode_frame (git-ignored; libFuzzer grows it between runs).
# libFuzzer needs nightly-only compiler flags: we use the nightly toolchain when rustup has one, else
# the stable compiler with RUSTC_BOOTSTRAP=1 (which unlocks those flags on stable; fine for a test tool).
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-60}}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/native/fuzz"
corpus="$fuzz_dir/corpus/decode_frame"
artifacts="$fuzz_dir/artifacts/decode_frame"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
fi

mkdir -p "$corpus" "$artifacts"
python3 - "$root" "$corpus" <<'PY'
import hashlib
import importlib.util
import pathlib
import sys

root, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
seeds = []
for path in sorted((root / "tests/native/corpus/codec").glob("*.hex")):
    text = "".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    seeds.append(bytes.fromhex(text))
# Valid frames from the pure-Python twin (loaded by path: no build needed).
spec = importlib.util.spec_from_file_location("codec_reference", root / "python/kefu/reference/codec.py")
reference = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = reference  # dataclasses look their module up there
spec.loader.exec_module(reference)
seeds += [
    reference.encode_frame({"t": "ping"}),
    reference.encode_frame({"t": "send", "conv": 7, "cid": "c1", "text": "hello"}),
    reference.encode_frame({
        "t": "msg", "conv": 2**40, "seq": 99, "id": "m1", "text": "你好 where is my order?", "at": 1.5e9,
        "tags": ["vip", -1, None, True, 2**64 - 1], "meta": {"raw": b"\x00\x01", "nested": [[{"a": 0.25}]]},
    }),
]
for seed in seeds:
    (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
print(f"fuzz: {len(seeds)} seeds in {corpus}")
# The data-plane parser starts from the same binary seeds plus the JSON corpus.
parse_corpus = corpus.parent / "parse_client_frame"
parse_corpus.mkdir(parents=True, exist_ok=True)
import json
for line in (root / "tests/native/corpus/dataplane_frames.jsonl").read_text().splitlines():
    seeds.append(json.loads(line)["frame"].encode("utf-8", "surrogatepass"))
for seed in seeds:
    (parse_corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
PY

cd "$fuzz_dir"
# -timeout: one input may take at most 1 s (anchor B2 flags > 100 ms; 1 s avoids noise on a busy box).
# -malloc_limit_mb: one allocation above 32 MB is a bug (the frame limit is 64 KiB).
# -max_len: a bit above max_frame_size, so too_large paths are reachable.
cargo "${toolchain[@]}" fuzz run decode_frame \
  --target-dir "$root/native/target/fuzz" \
  "$corpus" -- \
  -max_total_time="$seconds" -timeout=1 -rss_limit_mb=1024 -malloc_limit_mb=32 -max_len=70000 \
  -artifact_prefix="$artifacts/" -print_final_stats=1

mkdir -p "$fuzz_dir/artifacts/parse_client_frame"
cargo "${toolchain[@]}" fuzz run parse_client_frame \
  --target-dir "$root/native/target/fuzz" \
  "$fuzz_dir/corpus/parse_client_frame" -- \
  -max_total_time="$seconds" -timeout=1 -rss_limit_mb=1024 -malloc_limit_mb=32 -max_len=70000 \
  -artifact_prefix="$fuzz_dir/artifacts/parse_client_frame/" -print_final_stats=1
