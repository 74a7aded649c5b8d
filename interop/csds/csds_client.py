"""Reads CSDS (envoy.service.status.v3.ClientStatusDiscoveryService) with Python grpcio.

Usage: csds_client.py HOST:PORT [fetch|stream]

The protos are decoded by hand from the wire format (only the fields printed), so this
needs grpcio and nothing else. Prints one JSON object:
{"configs": [{"node_id": ..., "resources": [{"type_url", "name", "version_info",
"client_status", "error_details"}]}]}
"""
import json
import sys

import grpc

STATUS = {0: "UNKNOWN", 1: "REQUESTED", 2: "DOES_NOT_EXIST", 3: "ACKED", 4: "NACKED",
          5: "RECEIVED_ERROR", 6: "TIMEOUT"}


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """Yields (field number, wire type, value) of one message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        yield num, wt, v


def generic(buf):
    out = {"type_url": "", "name": "", "version_info": "", "client_status": "UNKNOWN",
           "error_details": None}
    for num, _, v in fields(buf):
        if num == 1:
            out["type_url"] = v.decode()
        elif num == 2:
            out["name"] = v.decode()
        elif num == 3:
            out["version_info"] = v.decode()
        elif num == 7:
            out["client_status"] = STATUS.get(v, str(v))
        elif num == 8:
            for n2, _, v2 in fields(v):
                if n2 == 3:
                    out["error_details"] = v2.decode()
    return out


def client_config(buf):
    out = {"node_id": None, "resources": []}
    for num, _, v in fields(buf):
        if num == 1:
            for n2, _, v2 in fields(v):
                if n2 == 1:
                    out["node_id"] = v2.decode()
        elif num == 3:
            out["resources"].append(generic(v))
    return out


def response(buf):
    return {"configs": [client_config(v) for num, _, v in fields(buf) if num == 1]}


def main():
    target, mode = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "fetch")
    service = "/envoy.service.status.v3.ClientStatusDiscoveryService/"
    with grpc.insecure_channel(target) as channel:
        if mode == "fetch":
            call = channel.unary_unary(service + "FetchClientStatus")
            raw = call(b"", timeout=10)
        else:
            call = channel.stream_stream(service + "StreamClientStatus")
            raw = next(iter(call(iter([b""]), timeout=10)))
    print(json.dumps(response(raw)))


if __name__ == "__main__":
    main()
