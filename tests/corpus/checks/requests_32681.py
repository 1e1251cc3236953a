"""CVE-2023-32681 (requests 2.30.0 -> 2.31.0): Proxy-Authorization leaked on HTTPS redirects.

When a redirect is followed, ``Session.rebuild_proxies`` re-adds ``Proxy-Authorization`` from the
proxy URL's credentials. For an ``https://`` target the request goes through a CONNECT tunnel, so
that header reaches the destination server itself. The check mounts an in-process adapter (no
sockets) that answers ``http://127.0.0.1/start`` with a 302 to ``https://localhost/landing`` and
looks at the request the Session then sends there, through an HTTPS proxy with credentials. It
uses the ``Session`` built in ``prepare()`` and a fresh one.
"""

from __future__ import annotations

import io
from typing import Any

from requests.adapters import BaseAdapter
from requests.models import PreparedRequest, Response
from requests.sessions import Session

_PROXIES = {"https": "http://user:pass@127.0.0.1:9"}


class _FakeAdapter(BaseAdapter):
    """Answers http:// with a redirect to https:// and https:// with an empty 200."""

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = Response()
        response.request, response.url = request, request.url
        response.raw = io.BytesIO(b"")
        if request.url and request.url.startswith("http://"):
            response.status_code = 302
            response.headers["Location"] = "https://localhost/landing"
        else:
            response.status_code = 200
        return response

    def close(self) -> None:
        pass


def _session() -> Session:
    session = Session()
    session.trust_env = False  # ignore any *_PROXY variables of the machine
    adapter = _FakeAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def prepare() -> object:
    return _session()


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, Session)
    leaked = False
    for session in (ctx, _session()):
        response = session.get("http://127.0.0.1/start", proxies=_PROXIES)
        if response.url != "https://localhost/landing":
            raise RuntimeError(f"redirect not followed: {response.url}")
        leaked |= "Proxy-Authorization" in response.request.headers
    return leaked
