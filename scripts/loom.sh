#!/usr/bin/env bash
# Model-checks the lock-free MPMC ring (native/queue) and the shared-memory ring (native/shmring) with loom: every interleaving of small scenarios
# within a preemption bound (LOOM_MAX_PREEMPTIONS, default 3 in tests/loom.rs).
# `--cfg loom` changes every crate's build, so it gets its own target dir instead of invalidating the
# shared one. The models take ~2 s; a cold build of loom and its dependencies ~50 s on 2 cores.
# Usage: scripts/loom.sh [extra cargo test args, e.g. a test name]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-native/target/loom}"
exec cargo test --manifest-path native/Cargo.toml -p kefu-queue -p kefu-shmring --release --test loom "$@"
