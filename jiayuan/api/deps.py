"""Dependencies shared by the resource modules: who is asking and what they may see, who may
use a route (:func:`allow`), paging, time ranges, and the one way to refuse a query parameter in
FastAPI's own 422 shape.

Routes read data through :data:`ViewDep` (scoped to the caller), never the stores directly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, NoReturn, cast, get_args

from fastapi import Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam

from jiayuan.api.bounds import I64_MAX, Instant
from jiayuan.api.view import View
from jiayuan.auth.authn import Authenticator
from jiayuan.auth.scope import Principal
from jiayuan.context import AppContext
from registry.models import Role

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ROLES: Final[tuple[Role, ...]] = get_args(Role)
ACCESS: Final = "__jiayuan_access__"
"""Marks the dependency that says who may use a route (see :func:`allow`)."""


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def get_principal(request: Request) -> Principal:
    """The caller, authenticated by :class:`jiayuan.api.security.SecurityMiddleware`."""
    p: Principal | None = getattr(request.state, "principal", None)
    if p is None:
        raise HTTPException(401, "sign in first", headers={"WWW-Authenticate": "Bearer"})
    return p


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


CtxDep = Annotated[AppContext, Depends(get_ctx)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
IpDep = Annotated[str, Depends(client_ip)]


def get_view(ctx: CtxDep, auth: AuthDep, principal: PrincipalDep) -> View:
    return View(ctx, auth.scope(principal), auth.audit)


ViewDep = Annotated[View, Depends(get_view)]


def allow(*roles: Role) -> DependsParam:
    """A dependency refusing (403) callers whose role is not one of ``roles``. Every route has
    one (``create_app`` refuses to build an app with a route that has none), so who may use
    what is written next to each route."""
    if not roles or any(r not in ROLES for r in roles):
        raise ValueError(f"allow(): roles among {ROLES}")

    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                403, f"the {principal.role} role may not use this (it is for: {', '.join(roles)})"
            )
        return principal

    setattr(check, ACCESS, roles)
    return cast(DependsParam, Depends(check))


ANYONE: Final = ROLES
"""Every signed-in role (what each is shown is still scoped)."""


def access_of(call: Callable[..., Any]) -> tuple[Role, ...] | None:
    roles: tuple[Role, ...] | None = getattr(call, ACCESS, None)
    return roles


Limit = Annotated[int, Query(ge=1, le=500, description="Page size, 1–500.")]
Community = Annotated[
    str | None,
    Query(
        pattern=ID_PATTERN,
        description="Only this community's (one the caller may see: 403 otherwise); unset:"
        " every community the caller sees.",
    ),
]
Offset = Annotated[int, Query(ge=0, le=I64_MAX, description="Items to skip.")]
Since = Annotated[
    Instant | None,
    Query(description="Inclusive lower bound, RFC 3339 with an offset (Z or +08:00)."),
]
Until = Annotated[
    Instant | None,
    Query(description="Exclusive upper bound, RFC 3339 with an offset (Z or +08:00)."),
]


def refuse(where: tuple[str, ...], msg: str, value: Any = None) -> NoReturn:
    """Raise a 422 that names the parameter, in the same shape as FastAPI's own."""
    raise RequestValidationError(
        [{"type": "value_error", "loc": where, "msg": msg, "input": value}]
    )


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        refuse(("query", "until"), "until must be later than since", until.isoformat())
