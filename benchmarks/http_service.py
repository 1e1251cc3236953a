"""Child of the readiness benchmark: a ThreadingHTTPServer app, with or without the runtime.

``python http_service.py on|off`` enables pyhotpatch (``on``) or not, serves HTTP/1.1 keep-alive
on an ephemeral loopback port and prints the port. ``GET /item/N`` answers a small JSON document;
``GET /cpu`` answers this process's CPU time in seconds; ``GET /enable`` enables the runtime now.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        if self.path == "/cpu":
            body = repr(time.process_time()).encode()
        elif self.path == "/enable":
            enable()
            body = b"enabled"
        else:
            item = self.path.rsplit("/", 1)[-1]
            body = json.dumps({"item": item, "squares": [i * i for i in range(20)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep quiet."""


def enable() -> None:
    import pyhotpatch

    pyhotpatch.enable()


def main() -> None:
    if sys.argv[1] == "on":
        enable()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
