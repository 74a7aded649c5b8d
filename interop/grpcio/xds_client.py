"""A proxyless gRPC client (PyPI grpcio, not written by us) for the control-plane tests.

Resolves an `xds:///host:port` target through the xDS server named in the bootstrap file
at $GRPC_XDS_BOOTSTRAP and calls grpc.health.v1.Health/Check on whatever backend the
routes pick. Messages are passed as raw protobuf bytes, so no generated code is needed.

usage: xds_client.py TARGET SERVICE_NAME CALLS [xds-creds]
prints one line per call: the hex of the HealthCheckResponse (0801 SERVING, 0802 NOT_SERVING),
or the status code's name when the call fails.

With `xds-creds` the channel uses grpcio's xDS channel credentials: mTLS as the clusters'
UpstreamTlsContext says, with the certificates of the bootstrap's `certificate_providers`
(plaintext only where the control plane sends no TLS context).
"""

import sys

import grpc
import grpc.experimental


def main() -> int:
    target, service, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # HealthCheckRequest{service: SERVICE_NAME}: field 1, length-delimited.
    name = service.encode()
    request = b"\x0a" + bytes([len(name)]) + name
    if sys.argv[4:] == ["xds-creds"]:
        creds = grpc.xds_channel_credentials(
            grpc.experimental.insecure_channel_credentials()
        )
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        for _ in range(calls):
            try:
                response = check(request, timeout=20, wait_for_ready=True)
                print(response.hex(), flush=True)
            except grpc.RpcError as e:
                print(e.code().name, e.details(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
