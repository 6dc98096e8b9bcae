#!/usr/bin/env bash
# Builds the Kefu container image for one architecture from this checkout:
#   scripts/build-image.sh amd64|arm64 [TAG]        (default tag kefu:ARCH)
# With podman (this project's machines): offline, from base images made of Debian packages
# (scripts/make-base-image.sh), `--pull=never --network=none`. With Docker (an operator's machine):
# `docker build` from debian:trixie(-slim), arm64 through buildx/QEMU. Either way the Python wheels
# and the Rust crates come from a cache outside git ($KEFU_IMAGE_CACHE, default ~/.cache/kefu-image),
# filled once from PyPI and crates.io and reused until requirements/image*.txt or Cargo.lock change.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: scripts/build-image.sh amd64|arm64 [TAG]}
tag=${2:-kefu:$arch}
case "$arch" in
  amd64) pyarch=x86_64 ;;
  arm64) pyarch=aarch64 ;;
  *) echo "unknown architecture $arch (amd64 or arm64)" >&2; exit 2 ;;
esac
cache=${KEFU_IMAGE_CACHE:-$HOME/.cache/kefu-image}
mkdir -p "$cache"
started=$(date +%s)

# 1. Wheels for CPython 3.13 (Debian trixie's python3): the target architecture's for the image, the
#    build machine's for the build tools (the same set when they match).
wheel_key=$(cat requirements/image.txt requirements/image-build.txt | sha256sum | cut -c1-16)
fill_wheelhouse() {  # ARCH (x86_64 | aarch64)
  local dir="$cache/wheelhouse-$1"
  if [ "$(cat "$dir/.key" 2>/dev/null)" != "$wheel_key" ]; then
    rm -rf "$dir"
    python3 -m pip download -q --disable-pip-version-check --dest "$dir" --only-binary=:all: \
      --python-version 3.13 --implementation cp --platform "manylinux_2_28_$1" \
      --platform "manylinux_2_27_$1" --platform "manylinux_2_17_$1" --platform "manylinux2014_$1" \
      -r requirements/image.txt -r requirements/image-build.txt
    echo "$wheel_key" > "$dir/.key"
  fi
}
fill_wheelhouse "$pyarch"
fill_wheelhouse "$(uname -m)"
# 2. Crates, as pinned by Cargo.lock.
crate_key=$(sha256sum native/Cargo.lock | cut -c1-16)
if [ "$(cat "$cache/vendor/.key" 2>/dev/null)" != "$crate_key" ]; then
  rm -rf "$cache/vendor"
  cargo vendor -q --locked --manifest-path native/Cargo.toml --versioned-dirs "$cache/vendor" >/dev/null
  echo "$crate_key" > "$cache/vendor/.key"
fi
# 3. Into the build context (hard links when the cache is on the same file system).
rm -rf .cache/image && mkdir -p .cache/image
stage() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }
stage "$cache/wheelhouse-$pyarch" .cache/image/wheelhouse
stage "$cache/wheelhouse-$(uname -m)" .cache/image/wheelhouse-build
stage "$cache/vendor" .cache/image/vendor

# Docker only where it can really build (buildx present): a machine with a bare docker CLI, like this
# project's, takes the offline podman route, which installs podman first when it is missing.
if command -v podman >/dev/null || ! docker buildx version >/dev/null 2>&1; then
  scripts/ensure-image-tools.sh
  # arm64 on an x86 machine: the build stage cross-compiles (kefu-cross), only the runtime is arm64.
  build_kind=build
  if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then build_kind=cross; fi
  scripts/make-base-image.sh "$arch" "$build_kind"
  scripts/make-base-image.sh "$arch" runtime
  # docker format: the OCI format has no HEALTHCHECK.
  # No --platform: the FROM lines carry it (the arm64 build stage runs on the build machine).
  nice -n 15 podman build --pull=never --network=none --format docker \
    --build-arg "BUILD_BASE=localhost/kefu-$build_kind:trixie-$arch" \
    --build-arg "RUNTIME_BASE=localhost/kefu-runtime:trixie-$arch" \
    -f "Dockerfile.$arch" -t "$tag" .
  size=$(podman image inspect "$tag" --format '{{.Size}}')
else
  nice -n 15 docker buildx build --load --platform "linux/$arch" -f "Dockerfile.$arch" -t "$tag" .
  size=$(docker image inspect "$tag" --format '{{.Size}}')
fi
rm -rf .cache/image
echo "built $tag: $((size / 1000000)) MB in $(( $(date +%s) - started )) s"
