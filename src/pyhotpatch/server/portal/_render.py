"""Turning a page's values into an HTML response: templates, filters and safe headers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

_HERE = Path(__file__).parent
TEMPLATES = _HERE / "templates"
STATIC = _HERE / "static"
#: what a portal page may load: its own stylesheet and script, nothing inline, no frames
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: the symbol shown beside a state, so that no state is told by colour alone
_SYMBOLS = {
    "good": "\u2714",  # heavy check mark
    "bad": "\u2716",  # heavy multiplication x
    "busy": "\u25f7",  # clock face
    "warn": "\u26a0",  # warning sign
    "idle": "\u25cb",  # circle
}
_TONES = {
    "succeeded": "good",
    "installed": "good",
    "registered": "good",
    "compliant": "good",
    "completed": "good",
    "passed": "good",
    "healthy": "good",
    "enabled": "good",
    "running": "good",
    "active": "busy",
    "inprogress": "busy",
    "registering": "busy",
    "unregistering": "busy",
    "installing": "busy",
    "baking": "busy",
    "pending": "busy",
    "failed": "bad",
    "halted": "bad",
    "noncompliant": "bad",
    "unhealthy": "bad",
    "canceled": "warn",
    "paused": "warn",
    "superseded": "idle",
    "compliantwithwarnings": "warn",
}


def tone(state: Any) -> str:
    """The tone (good, bad, busy, warn, idle) of a state's name."""
    return _TONES.get(str(state).replace(" ", "").replace("_", "").lower(), "idle")


def symbol(state: Any) -> str:
    """The symbol shown before a state's name."""
    return _SYMBOLS[tone(state)]


def when(value: Any) -> str:
    """An ISO 8601 time as ``2026-11-10 12:00 UTC``; a dash when there is none."""
    if not value:
        return "\u2014"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    suffix = " UTC" if moment.utcoffset() is not None and not moment.utcoffset() else ""
    return moment.strftime("%Y-%m-%d %H:%M") + suffix


def update_domains(machines: Any) -> str:
    """The availability sets and update domains a batch's machines are in, e.g. ``app-set: 1``.

    The orchestrator takes one update domain of a set at a time, so each set appears once.
    """
    found = sorted(
        {
            (m["availabilitySet"], m["updateDomain"])
            for m in machines or []
            if m.get("availabilitySet")
        },
        key=lambda pair: (pair[0], pair[1] if pair[1] is not None else -1),
    )
    return ", ".join(f"{name}: {domain}" for name, domain in found) or "no set"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["tone"] = tone
    env.filters["symbol"] = symbol
    env.filters["update_domains"] = update_domains
    return env


_ENV = _environment()


def secure(response: Response) -> Response:
    """Add the headers every portal answer carries (no caching, no framing, no sniffing)."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """The HTML response of ``template`` with ``values``."""
    html = _ENV.get_template(template).render(**values)
    response = HTMLResponse(html, status_code=status)
    secure(response)
    return response


def redirect(url: str) -> RedirectResponse:
    """303 See Other to ``url``: the Get after a Post."""
    response = RedirectResponse(url, status_code=303)
    secure(response)
    return response
