#!/usr/bin/env bash
# The native kernels' own tests (cargo test, every crate but the PyO3 wrapper) compiled FOR aarch64 and
# run ON aarch64: cross-compiled in the kefu-cross image (Debian's rustc + libstd-rust-dev:arm64 +
# gcc-aarch64-linux-gnu), and executed through binfmt_misc by qemu-user when the machine is x86.
# Offline: crates come from the vendored cache; the target directory is cached between runs (outside git).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${KEFU_IMAGE_CACHE:-$HOME/.cache/kefu-image}
scripts/ensure-image-tools.sh
scripts/make-base-image.sh arm64 cross
crate_key=$(sha256sum native/Cargo.lock | cut -c1-16)
if [ "$(cat "$cache/vendor/.key" 2>/dev/null)" != "$crate_key" ]; then
  rm -rf "$cache/vendor"
  cargo vendor -q --locked --manifest-path native/Cargo.toml --versioned-dirs "$cache/vendor" >/dev/null
  echo "$crate_key" > "$cache/vendor/.key"
fi
mkdir -p "$cache/target-arm64"
started=$(date +%s)
nice -n 15 podman run --rm --network=none \
  -v "$PWD:/src:ro" -v "$cache/vendor:/vendor:ro" -v "$cache/target-arm64:/target" \
  -e CARGO_TARGET_DIR=/target -e CARGO_BUILD_JOBS=2 \
  -e CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  localhost/kefu-cross:trixie-arm64 sh -c '
    mkdir -p "$HOME/.cargo" && printf "%s\n" "[source.crates-io]" "replace-with = \"vendored\"" \
      "[source.vendored]" "directory = \"/vendor\"" "[net]" "offline = true" > "$HOME/.cargo/config.toml"
    echo "build machine $(uname -m), $(rustc --version), target aarch64-unknown-linux-gnu"
    cargo test --locked --target aarch64-unknown-linux-gnu --manifest-path /src/native/Cargo.toml \
      --workspace --exclude kefu-native
    file=$(ls /target/aarch64-unknown-linux-gnu/debug/deps/kefu_codec-* | grep -v "\.d$" | head -n1)
    echo "test binaries are ELF machine $(od -An -tx1 -j18 -N2 "$file" | tr -d " ") (b700 = aarch64)"'
echo "aarch64 cargo test finished in $(( $(date +%s) - started )) s"
