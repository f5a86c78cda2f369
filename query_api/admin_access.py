"""Who may see and steer the platform through the console and ``/v1/admin``, and how a
browser's requests are told from a forged one.

Why a session cookie: a browser's navigation to ``/console`` cannot send an
``X-API-Key`` header, so the console's login form exchanges a key for a cookie. The
cookie is not the key: it is an expiry time and an HMAC of it under the key, so it
names no secret, outlives no key that is removed from ``EVENTFOLD_API_KEYS``, and
every query API instance checks it without shared state. It is ``HttpOnly`` and
``SameSite=Strict``.

Why a custom header on actions: a cookie is sent with requests that other sites'
pages make. Every action (POST or DELETE) that a cookie (or, with keys off, nobody)
authenticates must carry ``X-Eventfold-Console: 1``, which a cross-site page can only
send after a CORS preflight this API never grants; POST bodies must be JSON; a request
a browser marks as cross-site (``Sec-Fetch-Site``) or from another ``Origin`` is 403.
With API keys off, actions are also refused unless the ``Host`` is a loopback name,
so a page whose name an attacker re-points at 127.0.0.1 (DNS rebinding) cannot act.
Clients that send a key in a header (curl, scripts) carry no ambient credential and
need no custom header.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, HTTPException, Request

from eventfold.auth import ADMIN, ANONYMOUS, READ, key_name, key_scopes, presented_key
from eventfold.settings import Settings

SESSION_COOKIE = "eventfold_console"
SESSION_S = 12 * 3600
CONSOLE_HEADER = "X-Eventfold-Console"
CORRELATION_HEADER = "X-Correlation-ID"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
audit = logging.getLogger("eventfold.admin")


@dataclass(frozen=True)
class Principal:
    """The caller: the key's name as logs show it, its scopes, and whether a session
    cookie (an ambient credential, so the cross-site checks apply) authenticated it."""

    name: str
    scopes: frozenset[str]
    by_cookie: bool = False

    def may(self, scope: str) -> bool:
        return scope in self.scopes


def _signature(key: str, expires: int) -> str:
    return hmac.new(key.encode(), f"console:{expires}".encode(), hashlib.sha256).hexdigest()


def session_token(key: str, now: float | None = None) -> str:
    """The cookie value for ``key``: its expiry and the HMAC of it under the key."""
    expires = int((time.time() if now is None else now) + SESSION_S)
    return f"{expires}.{_signature(key, expires)}"


def session_key(settings: Settings, token: str, now: float | None = None) -> str | None:
    """The configured key whose session ``token`` is (None: expired, forged, or the key
    is gone). Every key is tried, in constant time each."""
    stamp, _, signature = token.partition(".")
    if not stamp.isdigit() or int(stamp) < (time.time() if now is None else now):
        return None
    found = None
    for key in settings.api_keys:
        if hmac.compare_digest(_signature(key, int(stamp)), signature):
            found = key
    return found


def identify(settings: Settings, request: Request) -> Principal:
    """The caller of ``request``: a key in a header, else the console's session cookie;
    401 without either (or with one that is not valid)."""
    if settings.auth_disabled:
        return Principal(ANONYMOUS, frozenset({READ, ADMIN}))
    presented = presented_key(
        request.headers.get("x-api-key"), request.headers.get("authorization")
    )
    if presented:
        found = key_scopes(settings, presented)
        if found is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        return Principal(key_name(found[0]), found[1])
    token = request.cookies.get(SESSION_COOKIE)
    key = session_key(settings, token) if token else None
    if key is None:
        raise HTTPException(
            401,
            "missing API key: send X-API-Key or Authorization: Bearer, or sign in at /console",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Principal(key_name(key), frozenset(settings.api_keys[key]), by_cookie=True)


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def guard_action(settings: Settings, request: Request, principal: Principal) -> None:
    """403 for an action a browser may have been tricked into (see the module's doc);
    415 for a POST whose body is not JSON."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request):
        raise HTTPException(403, f"request from another origin refused ({origin})")
    if request.method == "POST":
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HTTPException(415, "actions take a JSON body (Content-Type: application/json)")
    if principal.by_cookie or settings.auth_disabled:
        if request.headers.get(CONSOLE_HEADER) != "1":
            raise HTTPException(
                403,
                f"actions from a browser session (or with API keys off) need the "
                f"{CONSOLE_HEADER}: 1 header",
            )
    if settings.auth_disabled:
        host = (request.url.hostname or "").lower()
        if host not in LOOPBACK_HOSTS and f"[{host}]" not in LOOPBACK_HOSTS:
            raise HTTPException(
                403,
                "with API keys off, actions are taken only from localhost "
                "(set EVENTFOLD_API_KEYS to operate from elsewhere)",
            )


KeyHeader = Annotated[str | None, Header(description="API key")]
BearerHeader = Annotated[str | None, Header(description="Bearer <API key>")]


def require(settings: Settings, scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers with ``scope`` (403 without it); for ``admin``,
    also the cross-site checks of ``guard_action``. The key headers are declared so
    that the OpenAPI document shows them (the checks read the request itself); the
    console's header is not, so that a client generated from the document never sends
    it: it is for the console's pages, and the actions' descriptions name it."""

    async def check(
        request: Request, x_api_key: KeyHeader = None, authorization: BearerHeader = None
    ) -> Principal:
        principal = identify(settings, request)
        if not principal.may(scope):
            raise HTTPException(403, f"this API key lacks the '{scope}' scope")
        if scope == ADMIN:
            guard_action(settings, request, principal)
        return principal

    return check


def correlation_id(request: Request) -> str:
    """The caller's ``X-Correlation-ID`` when it is a sane token, else a new one."""
    given = request.headers.get(CORRELATION_HEADER, "")
    return given if _CORRELATION.match(given) else str(uuid.uuid4())


def log_action(principal: Principal, correlation: str, action: str, detail: str) -> None:
    """Every action, with who took it and the correlation id its answer carries."""
    audit.warning(
        "admin action %s by key %s (correlation-id %s): %s",
        action,
        principal.name,
        correlation,
        detail,
    )
