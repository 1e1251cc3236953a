r"""CVE-2023-30608 (sqlparse 0.4.3 -> 0.4.4): ReDoS in the lexer's string-literal regexes.

The single-quoted literal pattern ``'(''|\\\\|\\'|[^'])*'`` (and its double-quoted twin) can
match two backslashes either as one escaped backslash or as two plain characters, so an unclosed
literal full of backslashes backtracks exponentially (28 backslashes take ~0.1 s and every pair
more doubles it). 0.4.4 drops the escaped-backslash alternative. Rather than timing, the check
uses a deterministic trace of that alternative: for the SQL ``SELECT 'a\\'b'`` the vulnerable
lexer takes ``\\`` as one escape and ends the literal at the next quote (``'a\\'``); the fixed
one reads ``\'`` as an escaped quote and lexes ``'a\\'b'`` as one literal. It lexes through
``sqlparse.parse`` and through a ``FilterStack`` built in ``prepare()`` (0.4.3 compiles the regex
table at import and ``sqlparse.lexer`` binds it with a from-import).
"""

from __future__ import annotations

import sqlparse
from sqlparse import tokens
from sqlparse.engine import FilterStack

_SQL = "SELECT 'a\\\\'b'"  # the SQL text is: SELECT 'a\\'b'


def prepare() -> object:
    return FilterStack()


def _first_string(statements: list[sqlparse.sql.Statement]) -> str:
    for token in statements[0].flatten():
        if token.ttype in tokens.String:
            return str(token.value)
    raise RuntimeError("no string literal lexed")


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, FilterStack)
    literals = {_first_string(list(ctx.run(_SQL))), _first_string(list(sqlparse.parse(_SQL)))}
    return "'a\\\\'" in literals
