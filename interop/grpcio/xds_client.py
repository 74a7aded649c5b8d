"""A proxyless gRPC client (PyPI grpcio, not written by us) for the control-plane tests.

Resolves an `xds:///host:port` target through the xDS server named in the bootstrap file
at $GRPC_XDS_BOOTSTRAP and calls grpc.health.v1.Health/Check on whatever backend the
routes pick. Messages are passed as raw protobuf bytes, so no generated code is needed.

usage: xds_client.py TARGET SERVICE_NAME CALLS
prints one line per call: the hex of the HealthCheckResponse (0801 SERVING, 0802 NOT_SERVING)
"""

import sys

import grpc


def main() -> int:
    target, service, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # HealthCheckRequest{service: SERVICE_NAME}: field 1, length-delimited.
    name = service.encode()
    request = b"\x0a" + bytes([len(name)]) + name
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        for _ in range(calls):
            response = check(request, timeout=20, wait_for_ready=True)
            print(response.hex(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
