"""A proxyless gRPC xDS server (gRPC A36) from PyPI grpcio, and a plaintext probe.

    xds_server.py serve <port>   serve on 127.0.0.1:<port> as the xDS listener says
                                 (GRPC_XDS_BOOTSTRAP with server_listener_resource_name_template)
    xds_server.py probe <port>   one call of an unknown method: prints the status code name
                                 (UNIMPLEMENTED: the server serves; UNAVAILABLE: it does not)
"""

import sys
from concurrent import futures

import grpc


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), xds=True)
    creds = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    server.start()
    print("started", flush=True)
    server.wait_for_termination()


def probe(port):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/mesh.Probe/Call")
        try:
            call(b"", timeout=2)
            print("OK")
        except grpc.RpcError as e:
            print(e.code().name)


if __name__ == "__main__":
    {"serve": serve, "probe": probe}[sys.argv[1]](sys.argv[2])
