#!/usr/bin/env bash
# Installs PyPI grpcio (a proxyless gRPC xDS client not written here) into the peers dir.
# Prints the environment lines the interop tests read: the Python interpreter and the
# PYTHONPATH holding grpcio. The client script is interop/grpcio/xds_client.py.
set -euo pipefail
PEERS="${MESH_PEERS_DIR:?}"
VERSION=1.76.0
DIR="$PEERS/grpcio-$VERSION"
PY="$(command -v python3)"
if ! PYTHONPATH="$DIR" "$PY" -c "import grpc" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check --target "$DIR" "grpcio==$VERSION" >&2
fi
PYTHONPATH="$DIR" "$PY" -c "import grpc; print('grpcio', grpc.__version__)" >&2
echo "export MESH_GRPCIO_PYTHON=$PY"
echo "export MESH_GRPCIO_PYTHONPATH=$DIR"
