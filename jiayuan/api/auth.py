"""``/api/auth``: signing in and out of the console, who am I, and bearer tokens for programs.

- ``POST /api/auth/login`` (JSON or a form: ``staff_id``, ``password``): a session cookie
  (HttpOnly, SameSite=Strict, Secure over https) and the caller as ``/me`` describes them.
  Wrong id or password: 401, the same for both; too many failures: 429 with ``Retry-After``.
- ``POST /api/auth/logout``: ends the session and clears the cookie.
- ``GET /api/auth/me``: who the credentials are, their role, what the console may offer, and
  (sessions) the CSRF token unsafe requests must send in ``X-CSRF-Token``.
- ``POST /api/auth/tokens``: mint a bearer token, for oneself (signed in through the console)
  or, for an admin, for anyone; shown once. ``GET`` lists them (never the token), ``DELETE``
  revokes one.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import parse_qs

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jiayuan.api.bodylimit import LOGIN_MAX_BODY
from jiayuan.api.bounds import I64_MAX
from jiayuan.api.deps import (
    ANYONE,
    ID_PATTERN,
    AuthDep,
    IpDep,
    PrincipalDep,
    allow,
    client_ip,
    refuse,
)
from jiayuan.api.security import clear_cookie, cookie_name, is_https
from jiayuan.api.times import utc
from jiayuan.auth.authn import Authenticator, SignInLimited, SignInRefused
from jiayuan.auth.passwords import MAX_LENGTH
from jiayuan.auth.scope import ADMIN_TOKEN_ID, Principal, Via
from jiayuan.auth.store import Token
from registry.models import Role

router = APIRouter(prefix="/api/auth", tags=["auth"])
MAX_BODY: Final = LOGIN_MAX_BODY  # refused before it is read (jiayuan.api.bodylimit)


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    staff_id: str = Field(pattern=ID_PATTERN)
    password: str = Field(min_length=1, max_length=MAX_LENGTH)


class Me(BaseModel):
    staff_id: str
    name: str
    role: Role
    via: Via = Field(description="`session` (the console's cookie), `token` or `admin-token`.")
    expires_at: datetime | None
    csrf_token: str | None = Field(
        description="Sessions: send it as `X-CSRF-Token` on POST and DELETE."
    )
    can: list[str] = Field(
        description="What the console may offer this role (the API checks "
        "every request regardless)."
    )
    communities: list[str] = Field(
        default_factory=list,
        description="The communities this person sees: one, unless the installation has "
        "several and this is a district manager (the `community` filter of the listings).",
    )


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=100, description="What it is for, e.g. `prometheus`."
    )
    expires_in_days: int = Field(default=30, ge=1, description="At most `token_max_days`.")
    staff_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Whose token (admins only); default the caller.",
    )


class TokenOut(BaseModel):
    id: int
    hint: str = Field(description="The token's first characters, to recognise it.")
    staff_id: str
    name: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    active: bool


class NewToken(TokenOut):
    token: str = Field(description="Shown this once: `Authorization: Bearer <token>`.")


class TokenPage(BaseModel):
    items: list[TokenOut]
    total: int


def me_out(p: Principal, auth: Authenticator) -> Me:
    scope = auth.scope(p)
    seen = scope.communities
    return Me(
        staff_id=p.id,
        name=p.name,
        role=p.role,
        via=p.via,
        expires_at=utc(p.expires_at),
        csrf_token=p.csrf,
        can=scope.can,
        communities=sorted(seen) if seen is not None else list(auth.registry.parts),
    )


def token_out(t: Token, now: float) -> dict[str, Any]:
    return TokenOut(
        id=t.id,
        hint=t.hint,
        staff_id=t.staff_id,
        name=t.name,
        created_at=utc(t.created_at),
        created_by=t.created_by,
        expires_at=utc(t.expires_at),
        revoked_at=utc(t.revoked_at),
        revoked_by=t.revoked_by,
        active=t.revoked_at is None and t.expires_at > now,
    ).model_dump()


@router.post(
    "/login",
    response_model=Me,
    summary="Sign in (console session cookie)",
    responses={
        401: {"description": "Wrong staff id or password"},
        429: {"description": "Too many failed sign-ins; see Retry-After"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": LoginIn.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": LoginIn.model_json_schema()},
            },
        }
    },
)
async def login(request: Request, auth: AuthDep) -> JSONResponse:
    body = await _login_body(request)
    ip = client_ip(request)
    try:
        signed = await anyio.to_thread.run_sync(auth.sign_in, body.staff_id, body.password, ip)
    except SignInLimited as e:
        raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
    except SignInRefused as e:
        raise HTTPException(401, str(e)) from None
    secure = _secure(request)
    name = cookie_name(secure)
    old = request.cookies.get(name)
    if old:
        await anyio.to_thread.run_sync(auth.store.end_session, old[:128])
    out = me_out(signed.principal, auth)
    response = JSONResponse(out.model_dump(mode="json"))
    response.set_cookie(
        name,
        signed.session_id,
        max_age=int(auth.settings.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return response


async def _login_body(request: Request) -> LoginIn:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(413, "sign-in body too large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: Any
    try:
        if kind == "application/x-www-form-urlencoded":
            form = parse_qs(raw.decode("utf-8"), max_num_fields=10)
            data = {k: v[0] for k, v in form.items()}
        elif kind in ("application/json", ""):
            data = json.loads(raw or b"null")
        else:
            raise HTTPException(415, "send JSON or a form (application/x-www-form-urlencoded)")
        return LoginIn.model_validate(data)
    except ValidationError as e:
        # never echo the input: it may be a password
        errors = [
            {"type": err["type"], "loc": ("body", *err["loc"]), "msg": err["msg"]}
            for err in e.errors()
        ]
        raise RequestValidationError(errors) from None
    except ValueError:  # not UTF-8, not JSON, too many form fields
        refuse(("body",), "not JSON or a form", None)


def _secure(request: Request) -> bool:
    auth = request.app.state.auth
    s: bool | None = auth.settings.cookie_secure
    return is_https(auth.settings, request.scope) if s is None else s


@router.post(
    "/logout",
    status_code=204,
    summary="Sign out",
    dependencies=[allow(*ANYONE)],
    responses={400: {"description": "Not a console session (a token is revoked instead)"}},
)
def logout(request: Request, auth: AuthDep, principal: PrincipalDep, ip: IpDep) -> Response:
    """Ends the console session and clears its cookie (a token is revoked with DELETE
    /api/auth/tokens/{id} instead)."""
    if principal.via != "session":
        raise HTTPException(
            400, "not a console session: revoke a token with DELETE /api/auth/tokens/{id}"
        )
    secure = _secure(request)
    sid = request.cookies.get(cookie_name(secure)) or ""
    auth.store.end_session(sid[:128])
    auth.audit.record(principal.id, "auth.logout", target=principal.id, ip=ip)
    return Response(
        status_code=204, headers={"Set-Cookie": clear_cookie(cookie_name(secure), secure)}
    )


@router.get("/me", response_model=Me, summary="Who am I", dependencies=[allow(*ANYONE)])
def get_me(auth: AuthDep, principal: PrincipalDep) -> Me:
    return me_out(principal, auth)


@router.post(
    "/tokens",
    response_model=NewToken,
    status_code=201,
    summary="Mint a bearer token",
    dependencies=[allow(*ANYONE)],
    responses={403: {"description": "For someone else (admins only), or minted with a token"}},
)
def create_token(auth: AuthDep, principal: PrincipalDep, ip: IpDep, body: TokenIn) -> Any:
    """For programs (Prometheus, scripts): the token acts as its staff member, with their role
    and scope. Only admins mint tokens for others or from a token; a token lives at most
    `token_max_days`."""
    target = body.staff_id or principal.id
    if principal.role != "admin":
        if target != principal.id:
            raise HTTPException(403, "only an admin mints tokens for someone else")
        if principal.via != "session":
            raise HTTPException(403, "a token cannot mint tokens: sign in to the console")
    if target == ADMIN_TOKEN_ID or target not in auth.registry.staff:
        refuse(("body", "staff_id"), f"no staff member '{target}' in the registry", target)
    most = auth.settings.token_max_days
    if body.expires_in_days > most:
        refuse(
            ("body", "expires_in_days"),
            f"at most {most} days (token_max_days)",
            body.expires_in_days,
        )
    token, t = auth.store.create_token(
        target, body.name, body.expires_in_days * 86_400.0, principal.id
    )
    auth.audit.record(
        principal.id,
        "token.create",
        target=target,
        ip=ip,
        token_id=t.id,
        name=body.name,
        expires_in_days=body.expires_in_days,
    )
    return {**token_out(t, auth.store.clock()), "token": token}


@router.get(
    "/tokens", response_model=TokenPage, summary="List tokens", dependencies=[allow(*ANYONE)]
)
def list_tokens(
    auth: AuthDep,
    principal: PrincipalDep,
    staff_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> Any:
    """The caller's own tokens; an admin's: everyone's (or `staff_id`'s). Never the tokens
    themselves."""
    if principal.role != "admin":
        if staff_id not in (None, principal.id):
            raise HTTPException(403, "only an admin lists someone else's tokens")
        staff_id = principal.id
    items = auth.store.tokens(staff_id)
    now = auth.store.clock()
    return {"items": [token_out(t, now) for t in items], "total": len(items)}


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenOut,
    summary="Revoke a token",
    dependencies=[allow(*ANYONE)],
    responses={404: {"description": "No such token of yours"}},
)
def revoke_token(
    auth: AuthDep,
    principal: PrincipalDep,
    ip: IpDep,
    token_id: Annotated[int, Path(ge=1, le=I64_MAX)],
) -> Any:
    t = auth.store.get_token(token_id)
    if t is None or (principal.role != "admin" and t.staff_id != principal.id):
        raise HTTPException(404, f"token {token_id} not found")
    t = auth.store.revoke_token(token_id, principal.id) or t
    auth.audit.record(principal.id, "token.revoke", target=t.staff_id, ip=ip, token_id=t.id)
    return token_out(t, auth.store.clock())
