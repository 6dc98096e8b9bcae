#!/usr/bin/env bash
# Check that `make model` is reproducible: retrain into a temporary directory and compare the result
# byte for byte (sha256) with the committed python/kefu/sentiment/model/{sentiment.onnx,model_card.json}.
# Usage: scripts/check-model.sh [PYTHON]   (default .venv/bin/python; needs requirements/dev.txt installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
COMMITTED=python/kefu/sentiment/model
FRESH="$(mktemp -d)"
trap 'rm -rf "$FRESH"' EXIT

started=$(date +%s)
"$PYTHON" -m kefu.sentiment.train --out "$FRESH"
elapsed=$(( $(date +%s) - started ))

status=0
for file in sentiment.onnx model_card.json; do
    want=$(sha256sum "$COMMITTED/$file" | cut -d' ' -f1)
    got=$(sha256sum "$FRESH/$file" | cut -d' ' -f1)
    if [[ "$want" == "$got" ]]; then
        echo "ok: $file $got"
    else
        echo "DIFFERS: $file committed $want, retrained $got" >&2
        status=1
    fi
done
echo "retrained in ${elapsed}s"
exit $status
