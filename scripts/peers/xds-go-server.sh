#!/usr/bin/env bash
# Builds interop/xds-go-server (go-control-plane v0.14 + envoy protos v1.40.0, from the Go
# module proxy) into the peers dir. Rebuilds only when its sources changed.
# Prints the environment line that points tests at it.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/interop/xds-go-server"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-12)"
BIN="$PEERS/xds-go-server-$HASH/xds-go-server"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "xds-go-server needs Go >= 1.25 on PATH" >&2; exit 1; }
  mkdir -p "$(dirname "$BIN")"
  (cd "$SRC" && go build -mod=readonly -trimpath -o "$BIN.tmp" . >&2)
  mv "$BIN.tmp" "$BIN"
fi
echo "export MESH_XDS_GO_SERVER_BIN=$BIN"
