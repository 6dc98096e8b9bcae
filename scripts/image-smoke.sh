#!/usr/bin/env bash
# Runs a built image the way the deployment docs say and chats through it:
#   scripts/image-smoke.sh amd64|arm64 [IMAGE]        (default image kefu:ARCH)
# The container gets PostgreSQL from DB_* (a fresh database on this machine's server), REDIS_PASS
# (accepted, unused until the Redis bus lands), and a self-signed certificate pair mounted at
# /app/certs, i.e. the seed's `docker run -d -e DB_HOST=… -e REDIS_PASS=… -v /your/ssl:/app/certs`.
# It shares the host's network namespace and binds free loopback-reachable ports; traffic stays local.
# Then scripts/image_smoke.py: admin, agent and visitor over https/wss, messages both ways, model scoring.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: scripts/image-smoke.sh amd64|arm64 [IMAGE]}
image=${2:-kefu:$arch}
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
name="kefu-smoke-$arch-$$"
database="kefu_smoke_$$"
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
ws_port=$(free_port)
mkdir -p "$work/ssl"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -keyout "$work/ssl/privkey.pem" -out "$work/ssl/fullchain.pem" 2>/dev/null
chmod 644 "$work/ssl/privkey.pem"  # readable by the image's non-root user (uid 10001)
psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE $database" >/dev/null

emulation=()
if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
  # onnxruntime reads /sys/devices/system/cpu at import and crashes under qemu-user: an emulation artefact.
  emulation=(--security-opt mask=/sys/devices/system/cpu)
fi
started=$(date +%s)
podman run -d --name "$name" --network=host "${emulation[@]+"${emulation[@]}"}" \
  -e DB_HOST=127.0.0.1 -e DB_NAME="$database" -e REDIS_PASS=not-used-yet \
  -e KEFU_HTTP_PORT="$http_port" -e KEFU_WS_PORT="$ws_port" \
  -v "$work/ssl:/app/certs:ro" "$image" >/dev/null
for _ in $(seq 1 600); do
  podman logs "$name" 2>&1 | grep -q "^KEFU READY" && break
  podman ps -q --filter "name=$name" | grep -q . || { podman logs "$name"; echo "container exited" >&2; exit 1; }
  sleep 0.5
done
podman logs "$name" 2>&1 | grep "^KEFU READY" || { podman logs "$name"; exit 1; }
echo "container ready after $(( $(date +%s) - started )) s; arch $(podman image inspect "$image" --format '{{.Architecture}}'), user $(podman exec "$name" id -u)"
site_key=$(podman logs "$name" 2>&1 | sed -n 's/.*site key : \([^ ]*\).*/\1/p')
# A container's output is a log, not a terminal: the first-start admin password is in a 0600 file in
# the data volume (the log names it), never in the log itself.
password=$(podman exec "$name" cat /app/data/initial-admin-password)
"$python" scripts/image_smoke.py "https://127.0.0.1:$http_port" "$site_key" "$password" "$work/ssl/fullchain.pem"
# `kefu health` is a fresh Python process: under emulation its imports alone take several seconds.
podman healthcheck run "$name" 2>/dev/null || { echo "HEALTHCHECK failed" >&2; exit 1; }
echo "HEALTHCHECK (kefu health over https): healthy"
podman logs "$name" 2>&1 | grep -q "REDIS_PASS is set without REDIS_URL" || { echo "no REDIS_PASS log line" >&2; exit 1; }
echo "REDIS_PASS: accepted, logged as unused"
podman stop -t 20 "$name" >/dev/null
podman logs "$name" 2>&1 | grep -q '"msg": "stopped"' || { echo "no graceful stop" >&2; exit 1; }
echo "SIGTERM: graceful stop logged"
echo "smoke $arch passed in $(( $(date +%s) - started )) s"
