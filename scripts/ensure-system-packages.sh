#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, only when they are missing.
# Runs as root on the project's machines (and in the Dockerfiles); elsewhere prints what is missing.
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(gcc)
command -v cargo >/dev/null || need+=(cargo rustc)
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' || need+=(python3-dev)
command -v redis-server >/dev/null || need+=(redis-server)
# The bench peers: a Go gorilla/websocket hub built offline in GOPATH mode from Debian's sources.
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/gorilla/websocket ] || need+=(golang-github-gorilla-websocket-dev)
# Browser tests (tests/browser): Debian's Chromium driven by Playwright, and a CJK font for zh-CN.
command -v chromium >/dev/null || need+=(chromium)
[ -d /usr/share/fonts/truetype/wqy ] || need+=(fonts-wqy-zenhei)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages (install them as root): ${need[*]}" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
