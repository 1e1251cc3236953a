"""A child process for the runtime tests: runs snippets of Python sent as JSON lines on stdin.

``python repl.py [--no-enable]``: unless ``--no-enable`` is given, it calls
``pyhotpatch.enable()`` first. It then prints ``{"ready": true, "pid": ...}`` and
answers every request line ``{"code": "..."}`` by executing the code in one
namespace kept for the life of the process and printing
``{"ok": true, "result": <value of the name result>}`` or
``{"ok": false, "error": <exception type>, "message": <str(exc)>}``. It exits when
stdin closes. It imports nothing from pyhotpatch unless asked to.
"""

import json
import os
import sys


def main() -> None:
    """Serve requests until stdin closes."""
    if "--no-enable" not in sys.argv[1:]:
        import pyhotpatch

        pyhotpatch.enable()
    namespace: dict = {"__name__": "__child__"}
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        namespace.pop("result", None)
        try:
            exec(request["code"], namespace)
            reply = {"ok": True, "result": namespace.get("result")}
        except BaseException as exc:  # every failure goes back to the test
            reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(reply, default=repr), flush=True)


if __name__ == "__main__":
    main()
