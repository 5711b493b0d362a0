"""The errors every operation may answer, written into the OpenAPI document once rather than
next to each route: 401 and 403 (the security middleware), 404 where a path names something,
413 and 422 where a request has a body or parameters, 503 everywhere (an installation on
PostgreSQL with its database out of reach: jiayuan/api/errors.py). Clients and the schema
fuzzing test (tests/unit/test_api_fuzz.py) read the document as the whole truth."""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI

from jiayuan.api.security import is_public

ERROR: Final = {
    "type": "object",
    "properties": {"detail": {"title": "Detail"}},
    "required": ["detail"],
}
SIGNED_IN: Final = {
    401: "Not signed in, or the credentials are invalid, expired or revoked",
    403: "The caller's role may not use this, or a cross-site request",
}
NAMED: Final = {404: "Nothing of that id (or not the caller's to see)"}
WITH_BODY: Final = {
    400: "The body is not what its Content-Type says",
    413: "Request body too large",
    422: "Invalid request",
}
WITH_PARAMS: Final = {422: "Invalid request"}
BY_COMMUNITY: Final = {
    403: "The caller's role may not use this, a cross-site request, or a `community` the caller"
    " may not see",
    404: "No such `community` in this installation",
}
"""A listing's ``community`` filter (docs/communities.md)."""
DATABASE_AWAY: Final = {
    503: "The database cannot be reached now (an installation on PostgreSQL); see Retry-After"
}


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` list the common errors of each operation."""

    base = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = base()
        if not done:
            for path, ops in schema.get("paths", {}).items():
                for op in ops.values():
                    _add(path, op)
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add(path: str, op: dict[str, Any]) -> None:
    errors: dict[int, str] = dict(DATABASE_AWAY)
    if not is_public(path):
        errors |= SIGNED_IN
    if "{" in path:
        errors |= NAMED
    if op.get("parameters"):
        errors |= WITH_PARAMS
    if op.get("requestBody"):
        errors |= WITH_BODY
    if any(p.get("name") == "community" for p in op.get("parameters", ())):
        errors |= BY_COMMUNITY
    responses = op.setdefault("responses", {})
    for status, text in errors.items():
        responses.setdefault(
            str(status),
            {"description": text, "content": {"application/json": {"schema": ERROR}}},
        )
