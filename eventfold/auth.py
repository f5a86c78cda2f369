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
        presented = x_api_key
        if presented is None and authorization:
            kind, _, token = authorization.partition(" ")
            if kind.lower() == "bearer" and token:
                presented = token.strip()
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
        return key[:4] + "…"

    return check
