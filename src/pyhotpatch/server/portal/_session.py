"""The portal's session: a bearer token in a cookie, CSRF tokens and flash messages.

A signed-in browser holds the same bearer token an API client sends, in an HttpOnly,
SameSite=Strict cookie that scripts cannot read; the portal forwards it to the API as
``Authorization: Bearer …``, so the session grants exactly what the token grants and a
revoked token ends the session at once. Each sign-in also gets a random session id, kept
in the same cookie. Every state-changing form carries a CSRF token, an HMAC of the session
id keyed by the token: a page on another site can neither read it nor compute it, and no
two sign-ins share one. The sign-in form, which comes before any session, is protected by a random
nonce sent both as a cookie and as a form field (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "hotpatch_portal"
LOGIN_COOKIE = "hotpatch_portal_login"
FLASH_COOKIE = "hotpatch_portal_flash"
COOKIE_PATH = "/portal"
CSRF_FIELD = "csrf"
#: a session lasts at most this long in the browser (the token's own expiry still applies)
SESSION_SECONDS = 12 * 3600
#: flash messages are cut to this many characters, to stay within a cookie's size
FLASH_CHARS = 1500
_CSRF_PURPOSE = b"pyhotpatch portal csrf v1"
_FLASH_PURPOSE = b"pyhotpatch portal flash v1"


@dataclass(frozen=True)
class Flash:
    """A one-time message shown on the page a form redirects to."""

    level: str  # "success" or "error"
    text: str


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its random session id and the bearer token it signed in with."""

    id: str
    token: str

    @property
    def csrf(self) -> str:
        """The CSRF token this session's forms carry."""
        return hmac.new(
            self.token.encode(), _CSRF_PURPOSE + self.id.encode(), hashlib.sha256
        ).hexdigest()

    def csrf_valid(self, submitted: str | None) -> bool:
        """Whether a form's CSRF field belongs to this session."""
        return submitted is not None and hmac.compare_digest(self.csrf.encode(), submitted.encode())


def session_of(request: Request) -> Session | None:
    """The session of the signed-in browser, or None."""
    sid, _, token = request.cookies.get(SESSION_COOKIE, "").partition(".")
    token = token.strip()
    return Session(sid, token) if sid and token else None


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(response: Response, request: Request, token: str) -> None:
    """Start a session for ``token`` in the browser's cookie (and drop the sign-in nonce)."""
    response.set_cookie(
        SESSION_COOKIE,
        f"{secrets.token_urlsafe(18).replace('.', '_')}.{token}",
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


def end_session(response: Response, request: Request) -> None:
    """Forget the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, secure=_secure(request), httponly=True, samesite="strict"
    )


def login_nonce(request: Request) -> str:
    """The sign-in form's nonce: the one this browser holds, or a new one."""
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or len(nonce) > 100:
        nonce = secrets.token_urlsafe(24)
    return nonce


def keep_login_nonce(response: Response, request: Request, nonce: str) -> None:
    """Set the sign-in nonce as a cookie, for ``login_nonce_valid`` to compare with the form."""
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def login_nonce_valid(request: Request, submitted: str | None) -> bool:
    """Whether the sign-in form came from a page this browser loaded from us."""
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or submitted is None:
        return False
    return hmac.compare_digest(nonce.encode(), submitted.encode())


def set_flash(response: Response, request: Request, session: Session, flash: Flash) -> None:
    """Carry ``flash`` to the next page this session loads (signed with the session)."""
    payload = json.dumps({"level": flash.level, "text": flash.text[:FLASH_CHARS]}).encode()
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    signature = _flash_signature(session, payload)
    response.set_cookie(
        FLASH_COOKIE,
        f"{encoded}.{signature}",
        max_age=300,
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def _flash_signature(session: Session, payload: bytes) -> str:
    message = _FLASH_PURPOSE + session.id.encode() + b"\0" + payload
    return hmac.new(session.token.encode(), message, hashlib.sha256).hexdigest()


def read_flash(request: Request, session: Session) -> Flash | None:
    """The flash message waiting for this session, if any and if this session signed it."""
    value = request.cookies.get(FLASH_COOKIE)
    if value is None:
        return None
    encoded, _, signature = value.partition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        if not hmac.compare_digest(_flash_signature(session, payload), signature):
            return None
        data = json.loads(payload)
        level, text = str(data["level"]), str(data["text"])
    except (ValueError, KeyError, TypeError):
        return None
    return Flash("error" if level == "error" else "success", text)


def clear_flash(request: Request, response: Response) -> None:
    """Drop a shown flash message, so that it is shown once."""
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
