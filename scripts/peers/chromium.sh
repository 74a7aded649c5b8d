#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for the /graph browser test
# (mesh-admin's graph page). Needs root for apt-get; uses a chromium already on PATH.
# Prints the environment line the tests read.
set -euo pipefail
BIN="$(command -v chromium || true)"
if [ -z "$BIN" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends chromium >&2; }
  BIN="$(command -v chromium)"
fi
"$BIN" --headless --no-sandbox --version >&2 || "$BIN" --version >&2
echo "export MESH_CHROMIUM_BIN=$BIN"
