"""How control-plane commands print what they got: ``-o json|table|tsv`` and ``--query``.

The three formats are az's. ``json`` is the whole answer, for scripts that parse it;
``table`` shows the scalar fields of each item, one row each, for people; ``tsv`` prints
the same fields tab-separated with no header, for ``cut`` and shell loops. ``--query`` is a
JMESPath expression applied first, as with az (``--query "[].name" -o tsv``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from pyhotpatch.errors import HotpatchError

FORMATS = ("json", "table", "tsv")


class UsageError(HotpatchError):
    """The command line asks for something impossible; exit code 2."""


def apply_query(value: Any, query: str | None) -> Any:
    """``value`` narrowed by the JMESPath ``query`` (unchanged without one)."""
    if not query:
        return value
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(query, value)
    except JMESPathError as exc:
        raise UsageError(f"--query is not valid JMESPath: {exc}") from None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _columns(rows: list[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            for key, value in row.items():
                if _scalar(value):
                    seen.setdefault(key, None)
    return list(seen)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _heading(key: str) -> str:
    return key[:1].upper() + key[1:]


def render(
    value: Any,
    output: str,
    query: str | None,
    console: Console,
    table: Callable[[Any], Any] | None = None,
) -> None:
    """Print ``value`` in ``output`` format after applying ``query``.

    ``table`` reshapes the answer into the rows and columns people want for ``table`` and
    ``tsv`` output, as az's table transformers do; an explicit ``query`` replaces it.
    """
    if output not in FORMATS:
        raise UsageError(f"--output must be one of {', '.join(FORMATS)}, not {output!r}")
    if query is None and table is not None and output != "json":
        value = table(value)
    value = apply_query(value, query)
    if output == "json":
        sys.stdout.write(json.dumps(value, indent=2) + "\n")
        sys.stdout.flush()
        return
    rows = value if isinstance(value, list) else [value]
    if not rows:
        return
    columns = _columns(rows)
    if output == "tsv":
        for row in rows:
            if isinstance(row, dict):
                cells = [_text(row.get(column)) for column in columns]
            else:
                cells = [_text(row)]
            sys.stdout.write("\t".join(cells) + "\n")
        sys.stdout.flush()
        return
    grid = Table(show_edge=False, header_style="bold")
    if columns:
        for column in columns:
            grid.add_column(_heading(column), overflow="fold")
        for row in rows:
            if isinstance(row, dict):
                grid.add_row(*(_text(row.get(column)) for column in columns))
    else:
        grid.add_column("Result", overflow="fold")
        for row in rows:
            grid.add_row(_text(row))
    console.print(grid)
