"""A tiny non-Rust app for the proxy tests: answers every GET with JSON naming itself and
what it saw (host, x-forwarded-client-cert). `/slow?ms=N` answers after N milliseconds.

usage: python3 echo.py NAME PORT
"""
import http.server
import json
import socket
import sys
import time
import urllib.parse

NAME = sys.argv[1]
PORT = int(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real app behind a sidecar

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle holds the body until
        # the peer's delayed ACK (40 ms per request).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/slow":
            ms = int(urllib.parse.parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000)
        body = json.dumps({
            "name": NAME,
            "path": self.path,
            "host": self.headers.get("host"),
            "xfcc": self.headers.get("x-forwarded-client-cert"),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
