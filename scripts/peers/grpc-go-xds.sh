#!/usr/bin/env bash
# Builds interop/grpc-go-xds (a proxyless grpc-go v1.84 workload: xDS server and client,
# from the Go module proxy) into the peers dir. Rebuilds only when its sources changed.
# Prints the environment line that points tests at it.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/interop/grpc-go-xds"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-12)"
BIN="$PEERS/grpc-go-xds-$HASH/grpc-go-xds"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "grpc-go-xds needs Go >= 1.25 on PATH" >&2; exit 1; }
  mkdir -p "$(dirname "$BIN")"
  (cd "$SRC" && go build -mod=readonly -trimpath -o "$BIN.tmp" . >&2)
  mv "$BIN.tmp" "$BIN"
fi
echo "export MESH_GRPC_GO_XDS_BIN=$BIN"
