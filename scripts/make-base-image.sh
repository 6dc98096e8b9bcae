#!/usr/bin/env bash
# Makes the Debian base images the Dockerfiles build on, from Debian packages only (no registry pull):
#   scripts/make-base-image.sh ARCH KIND      ARCH = amd64 | arm64, KIND = build | cross | runtime
# tags localhost/kefu-KIND:trixie-ARCH. `build` holds the toolchain (Debian's rustc/cargo, gcc, Python
# headers); `cross` (ARCH=arm64) is the amd64 toolchain plus what cross-compiling for aarch64 needs:
# gcc-aarch64-linux-gnu, Debian's aarch64 Rust standard library for the same rustc (libstd-rust-dev:arm64)
# and CPython's aarch64 headers; `runtime` holds only python3 and CA certificates. An existing tag is
# kept (delete it with `podman rmi` to rebuild); arm64 roots run their package scripts under
# qemu-user-static, which is slow on a loaded machine (5-25 min).
set -euo pipefail
arch=${1:?arch: amd64 or arm64}
kind=${2:?kind: build or runtime}
suite=trixie
tag="localhost/kefu-$kind:$suite-$arch"
if podman image exists "$tag"; then
  echo "base image $tag exists"
  exit 0
fi
toolchain=rustc,cargo,gcc,libc6-dev,python3-dev,python3-venv,ca-certificates
architectures=$arch
image_arch=$arch  # what the image runs as: the build machine's architecture for `cross`
case "$kind" in
  build) packages=$toolchain ;;
  cross)
    [ "$arch" = arm64 ] || { echo "cross images target arm64" >&2; exit 2; }
    architectures=amd64,arm64
    image_arch=amd64
    packages=$toolchain,gcc-aarch64-linux-gnu,libc6-dev-arm64-cross,libstd-rust-dev:arm64,libpython3.13-dev:arm64 ;;
  runtime) packages=python3,ca-certificates ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
echo "making $tag with mmdebstrap ($packages)"
started=$(date +%s)
# Documentation, man pages and locales are not needed inside an image; apt lists are dropped by mmdebstrap.
nice -n 15 mmdebstrap --quiet --variant=minbase --architectures="$architectures" --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  "$suite" - http://deb.debian.org/debian \
  | podman import --arch "$image_arch" --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "made $tag in $(( $(date +%s) - started )) s"
