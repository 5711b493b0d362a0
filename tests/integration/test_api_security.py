"""Attacks on the real API (the app over real stores, in process): no credentials, forged,
expired, revoked and malformed ones, cross-site requests, password guessing; and the headers
every response carries. Scoping (who sees what) is in test_api_scope.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from jiayuan.api.app import check_access, served_routes
from jiayuan.api.security import PUBLIC
from jiayuan.auth.limiter import ACCOUNT_FREE, ADDRESS_FREE
from jiayuan.settings import Settings
from tests.staff import ADMIN, ADMIN_TOKEN
from tests.staffworld import PASSWORD, World, world

EXEMPT = {("GET", "/healthz"), ("GET", "/"), ("GET", "/console/{name}"),
          ("POST", "/api/auth/login")}  # fmt: skip
"""The only routes that answer without credentials: no data behind any of them."""


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    with world(tmp_path) as made:
        yield made


def every_route(app: FastAPI) -> list[tuple[str, str]]:
    """(method, a concrete path) for every route the app serves, its docs included, taken
    from the app itself: a route added tomorrow is in this list too."""
    out = []
    for raw, methods, _ in served_routes(app):
        path = re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1).endswith("_id") else "x", raw)
        if raw.startswith(("/api/devices/{", "/api/residents/{")):
            path = path.replace("/1", "/w-1").replace("/residents/w-1", "/residents/r-1")
        out += [(m, path) for m in sorted(methods) if m != "HEAD" and (m, raw) not in EXEMPT]
    return out


def test_every_route_without_credentials_answers_401(w: World) -> None:
    routes = every_route(w.app)
    assert len(routes) >= 30  # the enumeration found the API, not an empty list
    assert {p for _, p in EXEMPT} - {"/console/{name}"} <= PUBLIC
    with w.client() as c:
        for method, path in routes:
            r = c.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/docs").status_code == 401 and c.get("/openapi.json").status_code == 401
        assert c.get("/no/such/path").status_code == 401  # deny by default, even a 404
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer jy_" + "A" * 43,  # forged: the right shape, never issued
        "Bearer " + ADMIN_TOKEN[:-1],  # the admin token, one character short
        "Bearer " + ADMIN_TOKEN + "x",
        "Bearer",  # malformed
        "Bearer  ",
        "Basic YWRtOmNvcnJlY3Q=",
        "Token " + ADMIN_TOKEN,
        ADMIN_TOKEN,
        "Bearer " + "x" * 600,
    ],
    # stable names: ADMIN_TOKEN is new in each process, and parallel workers (pytest-xdist)
    # must collect the same tests
    ids=[
        "forged",
        "admin-short",
        "admin-long",
        "bearer-alone",
        "bearer-blank",
        "basic",
        "token-scheme",
        "no-scheme",
        "long",
    ],
)
def test_forged_and_malformed_tokens_are_refused_everywhere(w: World, header: str) -> None:
    with w.client() as c:
        for method, path in every_route(w.app):
            r = c.request(method, path, headers={"Authorization": header}, json={})
            assert r.status_code == 401, (header[:20], method, path)


def test_expired_and_revoked_tokens_are_refused(w: World) -> None:
    short = w.token("care-a", ttl_s=60)
    kept = w.token("care-a", ttl_s=7200)
    with w.client() as c:
        assert c.get("/api/auth/me", headers=short).json()["staff_id"] == "care-a"
        w.clock.advance(61)
        r = c.get("/api/auth/me", headers=short)
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        made = c.post("/api/auth/tokens", json={"name": "cron", "staff_id": "ops"}, headers=ADMIN)
        assert made.status_code == 201
        ops = {"Authorization": f"Bearer {made.json()['token']}"}
        assert c.get("/metrics", headers=ops).status_code == 200  # Prometheus' way in
        assert c.delete(f"/api/auth/tokens/{made.json()['id']}", headers=ADMIN).status_code == 200
        assert c.get("/metrics", headers=ops).status_code == 401
        assert c.get("/api/auth/me", headers=kept).status_code == 200
        listed = c.get("/api/auth/tokens", headers=ADMIN).json()["items"]
        assert all("token" not in t for t in listed)  # never shown again


def test_tokens_are_minted_for_oneself_and_only_admins_mint_for_others(w: World) -> None:
    with w.client() as c:
        guard = w.token("guard")
        r = c.post("/api/auth/tokens", json={"name": "x", "staff_id": "adm"}, headers=guard)
        assert r.status_code == 403
        r = c.post("/api/auth/tokens", json={"name": "x"}, headers=guard)
        assert r.status_code == 403 and "sign in" in r.json()["detail"]  # no token from a token
        r = c.post("/api/auth/tokens", json={"name": "x", "expires_in_days": 400}, headers=ADMIN)
        assert r.status_code == 422  # the admin token is nobody: name someone
        r = c.post(
            "/api/auth/tokens", json={"name": "x", "staff_id": "ops", "expires_in_days": 400},
            headers=ADMIN,
        )  # fmt: skip
        assert r.status_code == 422 and "at most 90 days" in r.text
        login(c, "guard")
        r = c.post("/api/auth/tokens", json={"name": "mine"}, headers=csrf(c))
        assert r.status_code == 201 and r.json()["staff_id"] == "guard"
        assert r.json()["token"].startswith("jy_")


def login(c: TestClient, staff_id: str, password: str = PASSWORD, **kw: Any) -> Any:
    return c.post("/api/auth/login", json={"staff_id": staff_id, "password": password}, **kw)


def csrf(c: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": c.get("/api/auth/me").json()["csrf_token"]}


def test_a_console_session_cookie_is_httponly_strict_and_needs_the_csrf_token(w: World) -> None:
    aid = w.fire("w-1")
    with w.client() as c:
        r = login(c, "care-a")
        assert r.status_code == 200 and r.json()["role"] == "caretaker"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("jiayuan_session=") and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
        assert PASSWORD not in r.text
        # a cookie-authenticated POST without the CSRF token, or with another one, is refused
        url = f"/api/alerts/{aid}/ack"
        assert c.post(url, json={}).status_code == 403
        assert c.post(url, json={}, headers={"X-CSRF-Token": "guess"}).status_code == 403
        foreign = {**csrf(c), "Origin": "https://evil.example"}
        assert c.post(url, json={}, headers=foreign).status_code == 403
        assert c.get(f"/api/alerts/{aid}").json()["status"] == "firing"
        r = c.post(url, json={}, headers={**csrf(c), "Origin": "http://testserver"})
        assert r.status_code == 200 and r.json()["acknowledged_by"] == "care-a"
        # signing out ends the session: the same cookie opens nothing any more
        sid = c.cookies.get("jiayuan_session")
        assert c.post("/api/auth/logout", headers=csrf(c)).status_code == 204
        c.cookies.set("jiayuan_session", sid or "")
        r = c.get("/api/alerts")
        assert r.status_code == 401 and "session has ended" in r.json()["detail"]
        assert "Max-Age=0" in r.headers["set-cookie"]


def test_a_forged_session_cookie_and_a_cross_site_sign_in_are_refused(w: World) -> None:
    with w.client() as c:
        c.cookies.set("jiayuan_session", "A" * 43)
        assert c.get("/api/alerts").status_code == 401
        c.cookies.clear()
        r = login(c, "care-a", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        r = c.post("/api/auth/login", data={"staff_id": "care-a", "password": PASSWORD})
        assert r.status_code == 200  # a plain form works too


def test_a_new_password_ends_the_sessions(w: World) -> None:
    from jiayuan.auth.manage import set_password

    with w.client() as c:
        login(c, "care-b")
        assert c.get("/api/auth/me").status_code == 200
        set_password(w.auth, w.ctx.registry, "care-b", "another long secret", "cli:test")
        assert c.get("/api/auth/me").status_code == 401
        assert login(c, "care-b").status_code == 401
        assert login(c, "care-b", "another long secret").status_code == 200


def test_repeated_bad_passwords_are_slowed_per_account_and_per_address(w: World) -> None:
    with w.client() as c:
        codes = [login(c, "care-a", "wrong password").status_code for _ in range(ACCOUNT_FREE)]
        assert codes == [401] * ACCOUNT_FREE
        r = login(c, "care-a", "wrong password")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert login(c, "care-a").status_code == 429  # the right password waits too
        # other accounts from the same address go on, until the address has failed too often
        others = ["care-b", "guard", "mgr", "ops", "adm"]
        answers = [login(c, s, "nope nope nope").status_code for s in others for _ in range(3)]
        assert answers == [401] * 15 and ACCOUNT_FREE + 15 == ADDRESS_FREE
        assert login(c, "adm").status_code == 429  # the address is locked now
        limited = c.get("/api/audit", params={"action": "auth.login_limited"}, headers=ADMIN)
        assert {e["target"] for e in limited.json()["items"]} == {"care-a", "adm"}
        failed = c.get("/api/audit", params={"action": "auth.login_failed"}, headers=ADMIN)
        assert failed.json()["total"] == ADDRESS_FREE
        assert all(e["ip"] == "testclient" for e in failed.json()["items"])


def test_wrong_and_unknown_accounts_get_the_same_answer(w: World) -> None:
    with w.client() as c:
        a = login(c, "care-a", "wrong password")
        b = login(c, "nobody-here", "wrong password")
        assert (a.status_code, a.json()) == (b.status_code, b.json()) == (
            401, {"detail": "wrong staff id or password"},
        )  # fmt: skip
        r = login(c, "care-a", "")
        assert r.status_code == 422 and PASSWORD not in r.text
        r = c.post("/api/auth/login", json={"staff_id": "care-a", "password": "x" * 300})
        assert r.status_code == 422 and "x" * 300 not in r.text  # input is never echoed
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for body in (b"\xff\xfe", b"&".join(b"a%d=1" % i for i in range(20)), b"{not json"):
            r = c.post("/api/auth/login", content=body, headers=form)
            assert r.status_code == 422, body
        r = c.post("/api/auth/login", content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415


def test_every_response_carries_the_security_headers(w: World) -> None:
    with w.client() as c:
        for r in (c.get("/healthz"), c.get("/"), c.get("/console/app.js"), c.get("/api/alerts"),
                  c.get("/api/alerts", headers=ADMIN), c.get("/nope")):  # fmt: skip
            h = r.headers
            assert "default-src 'self'" in h["content-security-policy"], r.url
            assert "frame-ancestors 'none'" in h["content-security-policy"]
            assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
            assert h["referrer-policy"] == "no-referrer" and "camera=()" in h["permissions-policy"]
            assert "strict-transport-security" not in h  # plain http here
        assert c.get("/api/alerts", headers=ADMIN).headers["cache-control"] == "no-store"


def test_over_https_cookies_are_secure_host_only_and_hsts_is_sent(tmp_path: Path) -> None:
    with world(tmp_path, public_url="https://jiayuan.example") as w2, w2.client() as c:
        r = login(c, "mgr")
        assert r.headers["set-cookie"].startswith("__Host-jiayuan_session=")
        assert "Secure" in r.headers["set-cookie"]
        assert r.headers["strict-transport-security"].startswith("max-age=")


def test_cors_is_closed_by_default(w: World) -> None:
    with w.client() as c:
        pre = c.options("/api/alerts", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})  # fmt: skip
        assert "access-control-allow-origin" not in pre.headers
        r = c.get("/api/alerts", headers={**ADMIN, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_an_app_with_a_route_that_declares_no_roles_is_not_built(w: World) -> None:
    app = w.app

    @app.get("/api/forgotten")
    def forgotten() -> dict[str, str]:
        return {"secret": "x"}

    with pytest.raises(RuntimeError, match="/api/forgotten"):
        check_access(app)


def test_the_service_refuses_a_weak_admin_token_outside_demo_mode(tmp_path: Path) -> None:
    for weak in ("changeme", "admin", "short-token", "a" * 40):
        with pytest.raises(ValidationError, match="JIAYUAN_ADMIN_TOKEN"):
            Settings(data_dir=tmp_path, admin_token=weak)
        assert Settings(data_dir=tmp_path, admin_token=weak, demo=True).demo
    secret = tmp_path / "admin.token"
    secret.write_text(ADMIN_TOKEN + "\n")
    s = Settings(data_dir=tmp_path, admin_token_file=secret)
    assert s.admin_token.get_secret_value() == ADMIN_TOKEN
    assert ADMIN_TOKEN not in repr(s) and ADMIN_TOKEN not in str(s.model_dump())
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValidationError, match="empty"):
        Settings(data_dir=tmp_path, admin_token_file=tmp_path / "empty")
