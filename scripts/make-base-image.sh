#!/usr/bin/env bash
# Makes the Debian base images the Dockerfiles build on, from Debian packages only (no registry pull):
#   scripts/make-base-image.sh ARCH KIND      ARCH = amd64 | arm64, KIND = build | runtime
# tags localhost/kefu-KIND:trixie-ARCH. `build` holds the toolchain (Debian's rustc/cargo, gcc, Python
# headers); `runtime` holds only python3 and CA certificates. An existing tag is kept (delete it with
# `podman rmi` to rebuild); arm64 roots are made under qemu-user-static (~5-10 min).
set -euo pipefail
arch=${1:?arch: amd64 or arm64}
kind=${2:?kind: build or runtime}
suite=trixie
tag="localhost/kefu-$kind:$suite-$arch"
if podman image exists "$tag"; then
  echo "base image $tag exists"
  exit 0
fi
case "$kind" in
  build) packages=rustc,cargo,gcc,libc6-dev,python3-dev,python3-venv,ca-certificates ;;
  runtime) packages=python3,ca-certificates ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
echo "making $tag with mmdebstrap ($packages)"
started=$(date +%s)
# Documentation, man pages and locales are not needed inside an image; apt lists are dropped by mmdebstrap.
nice -n 15 mmdebstrap --quiet --variant=minbase --architectures="$arch" --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  "$suite" - http://deb.debian.org/debian \
  | podman import --arch "$arch" --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "made $tag in $(( $(date +%s) - started )) s"
