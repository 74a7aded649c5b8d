#!/usr/bin/env bash
# Installs promtool (Debian package `prometheus`) for the exposition-format tests.
# Uses a promtool already on PATH; otherwise downloads the .deb (no root needed, no daemon
# installed or started) and extracts only the binary into the peers dir.
# Prints the environment line the tests read.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
DIR="$PEERS/promtool"
BIN="$DIR/usr/bin/promtool"
if command -v promtool >/dev/null 2>&1; then
  BIN="$(command -v promtool)"
elif [ ! -x "$BIN" ]; then
  mkdir -p "$DIR/deb"
  (cd "$DIR/deb" && apt-get download prometheus >&2)
  dpkg-deb -x "$DIR"/deb/prometheus_*.deb "$DIR/extract"
  mkdir -p "$DIR/usr/bin"
  cp "$DIR/extract/usr/bin/promtool" "$BIN"
  rm -rf "$DIR/extract" "$DIR/deb"
fi
"$BIN" --version >&2
echo "export MESH_PROMTOOL_BIN=$BIN"
