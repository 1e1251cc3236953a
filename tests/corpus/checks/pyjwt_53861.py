"""CVE-2024-53861 (pyjwt 2.10.0 -> 2.10.1): issuer check is a substring match.

``_validate_iss`` tested ``isinstance(issuer, Sequence)`` first; a ``str`` is a sequence, so a
configured issuer ``"https://auth.example.com"`` accepted any token whose ``iss`` is a substring
of it, such as ``"example.com"``. 2.10.1 compares strings for equality. The check signs a token
with ``iss="example.com"`` and decodes it expecting the full issuer, with the ``PyJWT`` instance
built in ``prepare()`` and with the module-level ``jwt.decode``.
"""

from __future__ import annotations

import jwt

_KEY = "corpus-check-hmac-key-of-at-least-32-bytes"
_ISSUER = "https://auth.example.com"


def prepare() -> object:
    return jwt.PyJWT()


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, jwt.PyJWT)
    token = jwt.encode({"iss": "example.com", "sub": "mallory"}, _KEY, algorithm="HS256")
    accepted = False
    for decode in (ctx.decode, jwt.decode):
        good = jwt.encode({"iss": _ISSUER}, _KEY, algorithm="HS256")
        if decode(good, _KEY, algorithms=["HS256"], issuer=_ISSUER)["iss"] != _ISSUER:
            raise RuntimeError("a token with the right issuer must decode")
        try:
            decode(token, _KEY, algorithms=["HS256"], issuer=_ISSUER)
        except jwt.InvalidIssuerError:
            continue
        accepted = True
    return accepted
