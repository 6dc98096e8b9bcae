#!/usr/bin/env bash
# Prepares this machine to build and run the container images offline with podman:
# installs podman/runc/mmdebstrap/qemu-user-static when missing, makes podman use runc (crun fails on
# hybrid cgroups) with default ulimits the sandbox accepts, and registers qemu-aarch64 with binfmt_misc
# so arm64 images run under emulation. Idempotent; needs root. On a machine with Docker + buildx none
# of this is needed: `docker buildx build -f Dockerfile.arm64 .` pulls debian:trixie-slim itself.
set -euo pipefail
need=()
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap qemu-aarch64-static:qemu-user-static; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "missing (install as root): ${need[*]}" >&2; exit 1; }
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap fuse-overlayfs binfmt-support arch-test >/dev/null
fi
conf=/etc/containers/containers.conf
if [ "$(id -u)" = 0 ] && ! grep -q '^runtime *= *"runc"' "$conf" 2>/dev/null; then
  mkdir -p /etc/containers
  cat >> "$conf" <<'CONF'
# Written by kefu scripts/ensure-image-tools.sh: runc (crun fails on hybrid cgroups here) and
# ulimits at or below what this sandbox allows (podman's defaults raise them and fail).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi
