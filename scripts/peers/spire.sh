#!/usr/bin/env bash
# Builds SPIRE v1.13.3 (spire-server, spire-agent) from the Go module proxy into the peers
# dir, using the pinned module in interop/spire (go.mod/go.sum with `tool` directives).
# Idempotent: skips the build when both binaries exist. Prints the environment lines that
# point tests at them. A cold build takes several minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS="${MESH_PEERS_DIR:?}"
VERSION=1.13.3
DIR="$PEERS/spire-$VERSION"
SERVER="$DIR/spire-server"
AGENT="$DIR/spire-agent"
if [ ! -x "$SERVER" ] || [ ! -x "$AGENT" ]; then
  command -v go >/dev/null || { echo "spire.sh: Go (>= 1.25) is required to build SPIRE" >&2; exit 1; }
  mkdir -p "$DIR"
  start=$(date +%s)
  (
    cd "$ROOT/interop/spire"
    # cgo stays on: spire-server's sqlite datastore (mattn/go-sqlite3) needs it.
    go build -trimpath -o "$DIR/" \
      github.com/spiffe/spire/cmd/spire-server \
      github.com/spiffe/spire/cmd/spire-agent
  ) >&2
  echo "spire.sh: built SPIRE $VERSION in $(( $(date +%s) - start ))s" >&2
fi
"$SERVER" --version >&2 2>&1 || true
echo "export MESH_SPIRE_SERVER_BIN=$SERVER"
echo "export MESH_SPIRE_AGENT_BIN=$AGENT"
