#!/usr/bin/env bash
# Builds istiod (pilot-discovery) from the Go module proxy into the peers dir. The version is
# pinned in interop/istiod/go.mod (istio.io/istio v0.0.0-20260827124520-eed52ebb66ad, the
# Istio 1.31.0 commit, as a `tool` directive) and every dependency in go.sum; the istio module
# needs Go >= 1.26.0.
#
# interop/istiod/patches/*.patch are applied to a copy of the pinned istio module, which a
# generated go.work substitutes for it (Go refuses -overlay for module-cache files, and the
# cache must stay pristine): this istio version panics when it runs without Kubernetes
# (--registries=); see interop/istiod/README.md.
#
# Idempotent: the binary lives in a directory named after go.mod, go.sum and the patches, so
# it is rebuilt only when one of them changes; the Go build cache makes a rebuild quick.
# Prints the environment line that points tests at it.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/interop/istiod"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/patches/*.patch | sha256sum | cut -c1-12)"
OUT="$PEERS/istiod-$HASH"
BIN="$OUT/pilot-discovery"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "istiod.sh: Go >= 1.26 is required to build istiod" >&2; exit 1; }
  start=$(date +%s)
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
  echo "istiod.sh: built pilot-discovery in $(( $(date +%s) - start ))s" >&2
fi
echo "export MESH_ISTIOD_BIN=$BIN"
