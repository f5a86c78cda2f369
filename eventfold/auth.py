"""API keys with scopes, shared by both HTTP APIs.

Keys come from ``EVENTFOLD_API_KEYS`` (JSON: ``{"<key>": ["write", "read"]}``),
sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Without a
key: 401; with a key lacking the scope: 403. Authentication is off only when
``EVENTFOLD_AUTH_DISABLED=true`` says so (``make run`` does, for local use).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Header, HTTPException

from eventfold.settings import Settings

ANONYMOUS = "anonymous (auth disabled)"


def _match(settings: Settings, presented: str) -> str | None:
    """The configured key equal to ``presented`` (constant-time comparison)."""
    found = None
    for key in settings.api_keys:
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = key
    return found


def require_scope(settings: Settings, scope: str) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency admitting callers whose key has ``scope``."""

    async def check(
        x_api_key: Annotated[str | None, Header(description="API key")] = None,
        authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    ) -> str:
        if settings.auth_disabled:
            return ANONYMOUS
        presented = presented_key(x_api_key, authorization)
        if not presented:
            raise HTTPException(
                401,
                "missing API key: send X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = _match(settings, presented)
        if key is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if scope not in settings.api_keys[key]:
            raise HTTPException(403, f"this API key lacks the '{scope}' scope")
        return key_name(key)

    return check


WRITE = "write"
"""The scope of publishing through the producer API."""

READ = "read"
"""The scope of the query API's reads and of viewing the console."""

ADMIN = "admin"
"""The scope of the operations console's actions (start or abort a rebuild, drop a
version, re-drive dead letters); viewing needs ``read``. A key gets it by naming it:
``{"k-ops": ["read", "admin"]}``."""


def key_name(key: str) -> str:
    """How logs name a key: its first characters, never the whole secret."""
    return key[:4] + "…"


def presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer``."""
    if x_api_key is None and authorization:
        kind, _, token = authorization.partition(" ")
        if kind.lower() == "bearer" and token:
            return token.strip()
    return x_api_key


def key_scopes(settings: Settings, presented: str) -> tuple[str, frozenset[str]] | None:
    """The configured key equal to ``presented`` (constant-time) and its scopes; None for
    an unknown key."""
    key = _match(settings, presented)
    return None if key is None else (key, frozenset(settings.api_keys[key]))
