#!/usr/bin/env bash
# Runs INSIDE the images' build stage (Dockerfile.amd64 / Dockerfile.arm64) and builds Kefu from the
# sources in /src with no network: wheels from /src/.cache/image/wheelhouse (target architecture) and
# /src/.cache/image/wheelhouse-build (build tools, build architecture), crates from
# /src/.cache/image/vendor (filled by scripts/build-image.sh).
#
#   image-build-stage.sh native     build for this machine; result: a venv at /opt/kefu
#   image-build-stage.sh aarch64    cross-compile on x86-64 for aarch64 (Debian's gcc-aarch64-linux-gnu,
#                                   libstd-rust-dev:arm64 for the same rustc, CPython's aarch64 headers
#                                   and sysconfig); result: site-packages at /opt/kefu-site, which
#                                   the arm64 runtime stage puts into its own venv
# The build tools (maturin, Cython, setuptools) live in /opt/build and stay in the build stage.
set -euo pipefail
trap 'echo "image-build-stage.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
mode=${1:-native}
cd /src
cache=/src/.cache/image
offline=(--disable-pip-version-check --no-cache-dir --no-index)

# Toolchain from Debian packages: baked into the base image on the offline podman path; a docker
# build from the stock debian:trixie image installs it here.
need=(rustc cargo gcc "libc6-dev:$(dpkg --print-architecture)" python3-dev python3-venv ca-certificates)
if [ "$mode" = aarch64 ]; then
  need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstd-rust-dev:arm64 libpython3.13-dev:arm64)
fi
if ! dpkg -s "${need[@]}" >/dev/null 2>&1; then
  [ "$mode" = aarch64 ] && dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "$(rustc --version) on $(uname -m), building for ${mode}"

# native/journal links the system libsqlite3 (the one Python's sqlite3 module loads: one SQLite per
# process, https://www.sqlite.org/howtocorrupt.html). Base images made before that need have no
# libsqlite3-dev, only the runtime library python3 pulls in: link against it through a private
# `libsqlite3.so` symlink (libsqlite3-sys uses its pre-generated bindings, so no header is needed).
link_sqlite_runtime() {  # $1 = multiarch triple
  local lib=/usr/lib/$1/libsqlite3.so.0 dir=/tmp/sqlite-link-$1
  [ -e "/usr/lib/$1/libsqlite3.so" ] && return 0
  [ -e "$lib" ] || { echo "no libsqlite3 for $1 in the build image" >&2; exit 1; }
  mkdir -p "$dir" && ln -sf "$lib" "$dir/libsqlite3.so"
  echo "$dir"
}
if [ "$mode" = aarch64 ]; then
  dir=$(link_sqlite_runtime aarch64-linux-gnu); [ -n "$dir" ] && export SQLITE3_LIB_DIR="$dir"
else
  dir=$(link_sqlite_runtime "$(gcc -dumpmachine)"); [ -n "$dir" ] && export SQLITE3_LIB_DIR="$dir"
fi

# Cargo takes every crate from the vendored copy, as pinned by Cargo.lock.
mkdir -p "$HOME/.cargo"
printf '%s\n' '[source.crates-io]' 'replace-with = "vendored"' '[source.vendored]' \
  "directory = \"$cache/vendor\"" '[net]' 'offline = true' > "$HOME/.cargo/config.toml"

python3 -m venv /opt/build
/opt/build/bin/pip install -q "${offline[@]}" --find-links "$cache/wheelhouse-build" -r requirements/image-build.txt
mkdir -p /dist

if [ "$mode" = native ]; then
  /opt/build/bin/pip wheel -q "${offline[@]}" --no-build-isolation --no-deps ./engine -w /dist
  # --auditwheel skip: never copy the system libsqlite3 into the wheel (it must stay the one copy
  # Python's sqlite3 module loads too).
  /opt/build/bin/maturin build --release --locked --auditwheel skip --interpreter /opt/build/bin/python -o /dist
  python3 -m venv /opt/kefu
  /opt/kefu/bin/pip install -q "${offline[@]}" --find-links "$cache/wheelhouse" --find-links /dist \
    -r requirements/image.txt kefu kefu-engine
  /opt/kefu/bin/pip uninstall -q -y pip
  # Bytecode now, so a read-only container does not compile at every start.
  /opt/kefu/bin/python -m compileall -q /opt/kefu/lib >/dev/null
  /opt/kefu/bin/python -c "import kefu.compiled, kefu.sentiment; kefu.sentiment.SentimentModel.load(); print('kefu build ok')"
  exit 0
fi

# aarch64 from x86-64. The Cython engine: setuptools compiles with aarch64 CPython's own sysconfig
# (compiler, flags, extension suffix); Debian's pyconfig.h picks the aarch64 half by itself.
export _PYTHON_HOST_PLATFORM=linux-aarch64
export _PYTHON_SYSCONFIGDATA_NAME=_sysconfigdata__linux_aarch64-linux-gnu
/opt/build/bin/pip wheel -q "${offline[@]}" --no-build-isolation --no-deps ./engine -w /dist
unset _PYTHON_HOST_PLATFORM _PYTHON_SYSCONFIGDATA_NAME
# The Rust extension: PyO3 needs only the target's Python version for an extension module.
export PYO3_CROSS_PYTHON_VERSION=3.13
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
/opt/build/bin/maturin build --release --locked --auditwheel skip --target aarch64-unknown-linux-gnu \
  --interpreter python3.13 --compatibility linux -o /dist
ls /dist
# Install for the target: pip resolves against aarch64 wheels only and unpacks them, running nothing.
/opt/build/bin/pip install -q "${offline[@]}" --find-links "$cache/wheelhouse" --find-links /dist \
  --only-binary=:all: --python-version 3.13 --implementation cp --abi cp313 --abi abi3 --abi none \
  --platform linux_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --target /opt/kefu-site -r requirements/image.txt kefu kefu-engine
rm -rf /opt/kefu-site/bin  # scripts made for the build machine's interpreter; the runtime stage writes its own
# Bytecode is the same on every architecture for one CPython version: compile it here, not under emulation.
python3 -m compileall -q -d /opt/kefu/lib/python3.13/site-packages /opt/kefu-site >/dev/null
file_of() { od -An -tx1 -j18 -N2 "$1" | tr -d ' '; }
[ "$(file_of /opt/kefu-site/kefu/_native*.so)" = b700 ] || { echo "kefu._native is not aarch64" >&2; exit 1; }
echo "kefu cross build ok"
