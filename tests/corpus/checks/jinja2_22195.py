"""CVE-2024-22195 (jinja2 3.1.2 -> 3.1.3): ``xmlattr`` accepts keys containing spaces.

``{{ attrs|xmlattr }}`` escapes values but, before 3.1.3, copies keys verbatim, so a key such as
``x onmouseover=alert(1)`` injects an extra attribute (XSS) even with autoescaping on; 3.1.3
raises ``ValueError`` for keys with whitespace. The check renders such a key through a template
compiled in ``prepare()`` on an autoescaping ``Environment`` made there, and through a template
compiled now from that Environment (the filter object is copied into ``Environment.filters``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

_SOURCE = "<div{{ attrs|xmlattr }}>"
_ATTRS = {"class": "box", "x onmouseover=alert(1)": "y"}


@dataclass
class _Ctx:
    env: jinja2.Environment
    template: jinja2.Template


def prepare() -> object:
    env = jinja2.Environment(autoescape=True)
    return _Ctx(env, env.from_string(_SOURCE))


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    injected = False
    for template in (ctx.template, ctx.env.from_string(_SOURCE)):
        try:
            html = template.render(attrs=_ATTRS)
        except ValueError:
            continue
        injected |= " onmouseover=alert(1)" in html
    return injected
