#!/usr/bin/env bash
# Builds istioctl (Istio 1.31.0, from the Go module proxy; version pinned in
# interop/istioctl/go.mod) into the peers dir: Istio's own offline validation
# (`istioctl validate`, `istioctl analyze --use-kube=false`) checks our example configs.
# Rebuilds only when go.mod/go.sum change. Cold build: about 10 minutes on 2 cores.
# Prints the environment line that points tests at it.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/interop/istioctl"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-12)"
BIN="$PEERS/istioctl-$HASH/istioctl"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "istioctl needs Go >= 1.26 on PATH" >&2; exit 1; }
  mkdir -p "$(dirname "$BIN")"
  (cd "$SRC" && go build -mod=readonly -trimpath -o "$BIN.tmp" istio.io/istio/istioctl/cmd/istioctl >&2)
  mv "$BIN.tmp" "$BIN"
fi
echo "export MESH_ISTIOCTL_BIN=$BIN"
