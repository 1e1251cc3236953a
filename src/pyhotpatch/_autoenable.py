"""Run by ``pyhotpatch_autoenable.pth`` at interpreter start: enable the runtime if asked.

Costs one environment lookup when ``PYHOTPATCH`` is unset; never lets an error
stop the interpreter from starting.
"""

import os

if os.environ.get("PYHOTPATCH", "").strip().lower() in {"1", "true", "yes", "on"}:
    try:
        from pyhotpatch.runtime import enable

        enable()
    except Exception as exc:
        import sys

        print(f"pyhotpatch: runtime not enabled: {exc!r}", file=sys.stderr)
