#!/usr/bin/env bash
# Installs the Prometheus server (Debian package `prometheus`) for the dashboard test
# (interop-tests/tests/prometheus_dashboards.rs). Uses a prometheus already on PATH; otherwise
# downloads the .deb (no daemon installed or started) and extracts only the server binary.
# Prints the environment line the tests read.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
DIR="$PEERS/prometheus"
BIN="$DIR/usr/bin/prometheus"
if command -v prometheus >/dev/null 2>&1; then
  BIN="$(command -v prometheus)"
elif [ ! -x "$BIN" ]; then
  mkdir -p "$DIR/deb"
  (cd "$DIR/deb" && apt-get download prometheus >&2)
  dpkg-deb -x "$DIR"/deb/prometheus_*.deb "$DIR/extract"
  mkdir -p "$DIR/usr/bin"
  cp "$DIR/extract/usr/bin/prometheus" "$BIN"
  rm -rf "$DIR/extract" "$DIR/deb"
fi
"$BIN" --version >&2
echo "export MESH_PROMETHEUS_BIN=$BIN"
