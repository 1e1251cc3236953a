"""Child of the instructions benchmark: serve N keep-alive requests to itself, then exit.

``python instructions_child.py on|off N``: with ``on`` the runtime is enabled first. A
ThreadingHTTPServer on a loopback port serves ``N`` requests from a keep-alive client in the
same process, so one run's instruction count covers start-up plus exactly ``N`` requests.
"""

from __future__ import annotations

import http.client
import sys
import threading
from http.server import ThreadingHTTPServer

from http_service import Handler


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    if mode == "on":
        import pyhotpatch

        pyhotpatch.enable()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    for i in range(count):
        conn.request("GET", f"/item/{i}")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"request {i} failed: {response.status}")
    conn.close()
    server.shutdown()


if __name__ == "__main__":
    main()
