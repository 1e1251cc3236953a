"""Try the engine on real security releases beyond the corpus; print one line per release.

Usage: ``.venv/bin/python scripts/survey.py [NAME ...]``. For each pair the builder diffs the
two releases from PyPI; a package it accepts is applied, reverted and applied again in a fresh
interpreter that imported the vulnerable release (installed with pip into the cache). Prints
OK, REFUSED (with the first reasons), APPLYFAIL or ERROR. Needs network access to PyPI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "corpus")]

from envs import ensure_env  # noqa: E402

from pyhotpatch.build import build  # noqa: E402
from pyhotpatch.errors import HotpatchError, NotHotpatchable  # noqa: E402

RELEASES = """
jinja2 3.1.3 3.1.4
jinja2 3.1.4 3.1.5
jinja2 2.11.2 2.11.3
werkzeug 3.0.1 3.0.3
werkzeug 3.0.5 3.0.6
werkzeug 2.2.2 2.2.3
urllib3 2.2.1 2.2.2
urllib3 1.26.17 1.26.18
urllib3 1.26.18 1.26.19
requests 2.31.0 2.32.0
requests 2.19.1 2.20.0
idna 3.6 3.7
h11 0.14.0 0.16.0
sqlparse 0.4.1 0.4.2
sqlparse 0.4.4 0.5.0
tqdm 4.66.2 4.66.3
django 5.0.6 5.0.7
django 4.2.10 4.2.11
tornado 6.4 6.4.1
tornado 6.4.1 6.4.2
flask 2.2.4 2.2.5
starlette 0.27.0 0.28.0
python-multipart 0.0.6 0.0.7
black 24.2.0 24.3.0
mako 1.2.1 1.2.2
pyjwt 2.3.0 2.4.0
aiohttp 3.9.3 3.9.4
paramiko 3.4.0 3.4.1
setuptools 65.5.0 65.5.1
gunicorn 21.2.0 22.0.0
pydantic 1.10.12 1.10.13
"""

_APPLY = r"""
import importlib, json, sys
import pyhotpatch
from pyhotpatch.package import read_package
package = read_package(sys.argv[1])
names = [m.name for t in package.manifest.targets for m in t.modules]
loaded = []
for name in names:
    try:
        importlib.import_module(name)
        loaded.append(name)
    except Exception:
        pass
report = pyhotpatch.apply(sys.argv[1])
pyhotpatch.revert(report["id"])
pyhotpatch.apply(sys.argv[1])
print(json.dumps({"imported": f"{len(loaded)}/{len(names)}", "functions": report["functions"],
                  "definitions": report["definitions"], "rebuilt": report["rebuilt"]}))
"""


def main(only: list[str]) -> int:
    """Survey every release pair (or those of the named distributions)."""
    work = Path(tempfile.mkdtemp(prefix="survey-"))
    for line in RELEASES.strip().splitlines():
        name, old, new = line.split()
        if only and name not in only:
            continue
        label = f"{name} {old}->{new}"
        try:
            result = build(f"{name}=={old}", f"{name}=={new}")
        except NotHotpatchable as exc:
            print(f"REFUSED   {label}: {len(exc.reasons)} reason(s), e.g. {exc.reasons[0]}")
            continue
        except HotpatchError as exc:
            print(f"ERROR     {label}: {type(exc).__name__}: {exc}")
            continue
        package = work / f"{name}-{new}.hotpatch"
        result.write(package)
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ensure_env(name, old))])
        )
        done = subprocess.run(
            [sys.executable, "-s", "-c", _APPLY, str(package)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode:
            print(f"APPLYFAIL {label}: {done.stderr.strip().splitlines()[-1]}")
        else:
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"OK        {label}: {package.stat().st_size} bytes, {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
