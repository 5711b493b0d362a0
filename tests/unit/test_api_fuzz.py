"""Fuzzing the HTTP API from its own OpenAPI with schemathesis, in-process over ASGI, as the
admin: every operation, a bounded number of examples each, and not one server error (5xx).
Responses are checked against the schema too (status codes, content types, bodies, headers).

The world behind it (tests/unit/api_world.py) holds what a long-lived installation may hold,
payloads no decoder accepts today included. The live stream never ends, so it is left out
here; its ``Last-Event-ID`` and the findings of this fuzzing, each with its concrete input,
are in test_api_limits.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from jiayuan.api import create_app
from tests.staff import ADMIN, bearer
from tests.unit.api_world import PUSH_INTEGRATION, running, with_push, world

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
"""Per operation and phase: with ~50 operations the whole run stays well under two minutes
on a busy two-core machine. ``FUZZ_EXAMPLES=500`` for a longer hunt."""


STACK = ExitStack()
DATA = Path(STACK.enter_context(tempfile.TemporaryDirectory(prefix="jiayuan-fuzz-")))
CTX = world(DATA, STACK)
PUSH = with_push(CTX, STACK)
"""The push endpoint's own credentials: its integration's token, not the admin's."""
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CTX), headers=ADMIN).exclude(
    path="/api/stream"
)
KNOWN: Final[dict[str, list[Any]]] = {
    "device_id": ["wr-1", "smk-101", "gate-C01-main", "w-9"],
    "resident_id": ["r-1", "r-3"],
    "alert_id": [1, 2],
    "silence_id": [1],
    "integration": [PUSH_INTEGRATION],
}
"""Ids of the world, so that operations on one thing reach the stores, not only their 404."""
EXCLUDED: Final = [positive_data_acceptance, allow_header_conformance]
"""A request the schema allows may still be refused by what it names (an unknown staff id): a
4xx, not a failure. Starlette's 405 lists the methods of the first route of a path only
(`Allow: GET` where DELETE is served too)."""


def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    known = {k: st.sampled_from(KNOWN[k]) for k in path_parameters or {} if k in KNOWN}
    if not known:
        return st.just(path_parameters)
    return st.one_of(
        st.just(path_parameters),
        st.fixed_dictionaries(known).map(lambda ids: {**path_parameters, **ids}),
    )


schema.hook(flatmap_path_parameters)
caretaker_schema = schema.include(path_regex=r"^/api/(devices|residents)")
"""What a caretaker sees differently from the admin: health readings, residents (the hook
above is shared)."""


@pytest.fixture(scope="module", autouse=True)
def _world() -> Iterator[None]:
    with STACK, running(CTX):
        yield


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@FUZZ
def test_no_operation_answers_a_server_error(case: schemathesis.Case[Any]) -> None:
    pushing = case.operation.path.startswith("/api/push/")
    case.call_and_validate(headers=PUSH if pushing else ADMIN, excluded_checks=EXCLUDED)


@caretaker_schema.parametrize()
@FUZZ
def test_no_operation_answers_a_caretaker_a_server_error(case: schemathesis.Case[Any]) -> None:
    # care-1 looks after r-1, who wears wr-1: they read its health readings (payloads no
    # decoder accepts among them) and r-1's activity, which the admin may not. A fresh token
    # each time: the fuzzing revokes tokens (DELETE /api/auth/tokens/{id}).
    case.call_and_validate(headers=bearer(CTX, "care-1"), excluded_checks=EXCLUDED)
