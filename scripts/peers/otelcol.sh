#!/usr/bin/env bash
# Builds interop/otelcol (an OpenTelemetry Collector v0.161.0 distribution: OTLP receiver +
# file exporter, from the Go module proxy) into the peers dir, for the OTLP export test of
# mesh-telemetry. Rebuilds only when its sources changed.
# Prints the environment line that points tests at it.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/interop/otelcol"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-12)"
BIN="$PEERS/otelcol-$HASH/otelcol"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "otelcol needs Go >= 1.25 on PATH" >&2; exit 1; }
  mkdir -p "$(dirname "$BIN")"
  (cd "$SRC" && go build -mod=readonly -trimpath -ldflags="-s -w" -o "$BIN.tmp" . >&2)
  mv "$BIN.tmp" "$BIN"
fi
echo "export MESH_OTELCOL_BIN=$BIN"
