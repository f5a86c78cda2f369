"""The operations console's pages at ``/console``: the single page and its assets, built
from ``console/`` into ``query_api/console_assets`` (shipped in the package, so the
console works offline: no CDN), and the sign-in that turns an API key into the session
cookie of ``query_api.admin_access``.

With API keys on, nothing of the console is served without a valid session (or a key
in a header): ``/console`` sends a browser to the sign-in form, and the assets answer
401. Every page carries a Content-Security-Policy that allows this origin's scripts
only, and may not be framed (clickjacking).
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from eventfold.auth import key_scopes
from eventfold.settings import Settings
from query_api.admin_access import (
    READ,
    SESSION_COOKIE,
    SESSION_S,
    identify,
    session_token,
)

ASSETS = Path(__file__).resolve().parent / "console_assets"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
LOGIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
MAX_FORM_BYTES = 4096
LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Eventfold console: sign in</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;
place-items:center;min-height:100vh;margin:0}}
form{{background:#1e293b;padding:2rem;border-radius:8px;min-width:20rem}}
label{{display:block;margin-bottom:.5rem}}
input{{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;border-radius:4px;
border:1px solid #64748b;background:#0f172a;color:inherit}}
button{{margin-top:1rem;padding:.5rem 1rem;font:inherit;border-radius:4px;border:0;
background:#38bdf8;color:#0f172a;cursor:pointer}}
:focus-visible{{outline:3px solid #facc15;outline-offset:2px}}
.error{{color:#fca5a5}}
</style></head>
<body><main><form method="post" action="/console/login">
<h1>Eventfold console</h1>
<p>Sign in with an API key that has the <code>read</code> scope
(<code>admin</code> to act).</p>
{error}
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form></main></body></html>
"""


def _secure_headers(response: Response, csp: str) -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


def _login_page(error: str = "", status: int = 200) -> Response:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _secure_headers(
        HTMLResponse(LOGIN_PAGE.format(error=shown), status_code=status), LOGIN_CSP
    )


class Assets:
    """The built files, read once (off the event loop) and kept: they are small."""

    def __init__(self, folder: Path = ASSETS) -> None:
        self._folder = folder
        self._cache: dict[str, bytes] = {}

    async def get(self, name: str) -> bytes:
        if name not in self._cache:
            if not (self._folder / "index.html").is_file():
                raise HTTPException(503, "the console's assets are not built: run `make console`")
            path = self._folder / name
            if path.suffix not in TYPES or path.parent != self._folder or not path.is_file():
                raise HTTPException(404, f"no console asset {name!r}")
            self._cache[name] = await asyncio.to_thread(path.read_bytes)
        return self._cache[name]


def _signed_in(settings: Settings, request: Request) -> bool:
    try:
        return identify(settings, request).may(READ)
    except HTTPException:
        return False


def console_routes(settings: Settings, assets: Assets | None = None) -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)
    files = assets or Assets()

    async def page(request: Request) -> Response:
        if not _signed_in(settings, request):
            return RedirectResponse("/console/login", status_code=303)
        body = await files.get("index.html")
        return _secure_headers(Response(body, media_type=TYPES[".html"]), CONSOLE_CSP)

    router.add_api_route("", page, methods=["GET"])
    router.add_api_route("/", page, methods=["GET"])

    @router.get("/assets/{name}")
    async def asset(name: str, request: Request) -> Response:
        identify(settings, request)  # 401 without a session or key
        body = await files.get(name)
        media = TYPES.get(Path(name).suffix, "application/octet-stream")
        return _secure_headers(Response(body, media_type=media), CONSOLE_CSP)

    @router.get("/login")
    async def login_form() -> Response:
        if settings.auth_disabled:
            return RedirectResponse("/console", status_code=303)
        return _login_page()

    @router.post("/login")
    async def login(request: Request) -> Response:
        """Exchange a key (form field ``key``) for the session cookie. Only from a
        page of this origin, so no other site can sign a browser in with its key."""
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and origin not in (own, "null")
        ):
            raise HTTPException(403, "sign-in from another site refused")
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
        key = (parse_qs(raw.decode("utf-8", "replace")).get("key") or [""])[0].strip()
        found = key_scopes(settings, key) if key else None
        if found is None or READ not in found[1]:
            return _login_page("unknown API key, or one without the read scope", status=401)
        response = RedirectResponse("/console", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_token(found[0]),
            max_age=SESSION_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return router
