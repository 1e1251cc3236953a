"""CVE-2025-27516 (jinja2 3.1.5 -> 3.1.6): sandbox escape through the ``|attr`` filter.

The sandbox wraps ``str.format`` so format strings cannot reach dunder attributes, but before
3.1.6 ``"..."|attr("format")`` fetched the plain bound ``str.format`` with ``getattr`` and the
template could call it; 3.1.6 routes ``attr`` through ``Environment.getattr`` and the call raises
``SecurityError``. The check renders a format string that walks to ``__subclasses__`` through a
template compiled in ``prepare()`` on a ``SandboxedEnvironment`` made there, and a fresh template.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Template
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

_SOURCE = '{{ "{0.__class__.__base__.__subclasses__}"|attr("format")(1) }}'


@dataclass
class _Ctx:
    env: SandboxedEnvironment
    template: Template


def prepare() -> object:
    env = SandboxedEnvironment()
    return _Ctx(env, env.from_string(_SOURCE))


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    escaped = False
    for template in (ctx.template, ctx.env.from_string(_SOURCE)):
        try:
            out = template.render()
        except SecurityError:
            continue
        escaped |= "__subclasses__" in out
    return escaped
