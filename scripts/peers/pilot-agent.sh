#!/usr/bin/env bash
# Builds Istio's agent (pilot-agent) from the Go module proxy into the peers dir, at the same
# istio.io/istio commit as istiod (Istio 1.31.0; pinned in interop/pilot-agent/go.mod as a
# `tool` directive, every dependency locked in go.sum). The tests run it in its `grpc-agent`
# mode, the standard proxyless gRPC deployment: it writes the xDS bootstrap and the workload
# certificates and proxies the workload's xDS stream to istiod.
#
# Shares the Go module and build caches with istiod.sh (same istio module, same
# dependencies), so after istiod is built this takes about a minute. pilot-agent needs none of
# istiod's patches (they touch pilot-discovery's registry only).
#
# Idempotent: rebuilt only when go.mod or go.sum change. Prints the environment line that
# points tests at it.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/interop/pilot-agent"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-12)"
BIN="$PEERS/pilot-agent-$HASH/pilot-agent"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "pilot-agent.sh: Go >= 1.26 is required to build pilot-agent" >&2; exit 1; }
  start=$(date +%s)
  mkdir -p "$(dirname "$BIN")"
  (cd "$SRC" && go build -mod=readonly -trimpath -o "$BIN.tmp" istio.io/istio/pilot/cmd/pilot-agent >&2)
  mv "$BIN.tmp" "$BIN"
  echo "pilot-agent.sh: built pilot-agent in $(( $(date +%s) - start ))s" >&2
fi
echo "export MESH_PILOT_AGENT_BIN=$BIN"
