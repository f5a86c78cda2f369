"""The console's session cookie and the admin actions' cross-site checks, without servers."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from eventfold.settings import Settings
from query_api.admin_access import (
    CONSOLE_HEADER,
    SESSION_COOKIE,
    Principal,
    correlation_id,
    guard_action,
    identify,
    session_key,
    session_token,
)

KEYS = {"k-ops-secret": ["read", "admin"], "k-view-secret": ["read"]}
ON = Settings(api_keys=KEYS)
OFF = Settings(auth_disabled=True)


def request(method: str = "POST", host: str = "127.0.0.1:8002", **headers: str) -> Request:
    raw = [(b"host", host.encode())] + [
        (k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()
    ]
    return Request(
        {"type": "http", "method": method, "path": "/v1/admin/rebuilds", "headers": raw,
         "scheme": "http", "server": ("127.0.0.1", 8002), "query_string": b""}
    )  # fmt: skip


def test_a_session_names_its_key_until_it_expires() -> None:
    token = session_token("k-view-secret", now=1000.0)
    assert session_key(ON, token, now=1001.0) == "k-view-secret"
    assert "k-view-secret" not in token
    assert session_key(ON, token, now=1000.0 + 13 * 3600) is None  # expired


def test_a_forged_or_orphaned_session_is_refused() -> None:
    token = session_token("k-view-secret", now=1000.0)
    stamp, _, signature = token.partition(".")
    assert session_key(ON, f"{int(stamp) + 3600}.{signature}", now=1001.0) is None
    assert session_key(ON, "garbage", now=1001.0) is None
    assert session_key(Settings(api_keys={"other": ["read"]}), token, now=1001.0) is None


def test_identify_by_header_key_or_cookie_and_401_without() -> None:
    by_key = identify(ON, request(x_api_key="k-ops-secret"))
    assert by_key.scopes == {"read", "admin"} and not by_key.by_cookie
    assert by_key.name == "k-op…"
    cookie = f"{SESSION_COOKIE}={session_token('k-view-secret')}"
    by_cookie = identify(ON, request(cookie=cookie))
    assert by_cookie.scopes == {"read"} and by_cookie.by_cookie
    for headers in ({}, {"x_api_key": "nope"}, {"cookie": f"{SESSION_COOKIE}=1.abc"}):
        with pytest.raises(HTTPException) as refused:
            identify(ON, request(**headers))
        assert refused.value.status_code == 401


def forbidden(settings: Settings, req: Request, who: Principal) -> int | None:
    try:
        guard_action(settings, req, who)
    except HTTPException as exc:
        return exc.status_code
    return None


JSON = {"content_type": "application/json"}
COOKIE_USER = Principal("k-op…", frozenset({"read", "admin"}), by_cookie=True)
KEY_USER = Principal("k-op…", frozenset({"read", "admin"}))


def test_browser_sessions_need_the_console_header() -> None:
    assert forbidden(ON, request(**JSON), COOKIE_USER) == 403
    assert forbidden(ON, request(**JSON, **{CONSOLE_HEADER: "1"}), COOKIE_USER) is None
    assert forbidden(ON, request(**JSON), KEY_USER) is None  # a key in a header: no ambient


def test_cross_site_marks_and_other_origins_are_refused() -> None:
    console = {CONSOLE_HEADER: "1", **JSON}
    assert forbidden(ON, request(**console, sec_fetch_site="cross-site"), COOKIE_USER) == 403
    assert forbidden(ON, request(**console, sec_fetch_site="same-site"), COOKIE_USER) == 403
    assert forbidden(ON, request(**console, origin="http://evil.example"), COOKIE_USER) == 403
    same = request(**console, origin="http://127.0.0.1:8002", sec_fetch_site="same-origin")
    assert forbidden(ON, same, COOKIE_USER) is None


def test_a_post_must_be_json() -> None:
    form = request(content_type="application/x-www-form-urlencoded", **{CONSOLE_HEADER: "1"})
    assert forbidden(ON, form, COOKIE_USER) == 415
    assert forbidden(ON, request("DELETE", **{CONSOLE_HEADER: "1"}), COOKIE_USER) is None


def test_with_keys_off_only_a_loopback_host_may_act() -> None:
    anyone = identify(OFF, request())
    console = {CONSOLE_HEADER: "1", **JSON}
    assert forbidden(OFF, request(**console), anyone) is None
    assert forbidden(OFF, request(host="localhost:8002", **console), anyone) is None
    assert forbidden(OFF, request(host="rebound.example:8002", **console), anyone) == 403
    assert forbidden(OFF, request(**JSON), anyone) == 403  # and the header, always


def test_correlation_ids_are_kept_when_sane() -> None:
    assert correlation_id(request(x_correlation_id="abc-123")) == "abc-123"
    made = correlation_id(request(x_correlation_id="bad id\nwith newline"))
    assert made != "bad id\nwith newline" and len(made) == 36
