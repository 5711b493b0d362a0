"""``POST /api/push/{integration}``: device platforms push JSON; answered once it is journaled.

- **Who**: the integration's own token (``Authorization: Bearer jyp_…``, from ``jiayuan push
  token NAME``), compared in constant time against its digest. Staff credentials are not
  looked at on this path (the security middleware passes it by), so a staff token or session
  opens no push; an integration token opens nothing else (it is in no staff store). Failed
  attempts are logged without the token and counted per integration and address as failed
  sign-ins are: past the free ones, 429 with ``Retry-After`` — for wrong tokens only: the
  token is checked first and the right one always gets through.
- **What**: the integration's profile maps the body onto canonical messages; each is then
  decoded and journaled exactly as an MQTT message (same validation, same dead letters), by the
  same pipeline, urgent ones (events, status) in the urgent lane.
- **When**: 200 only after every message of the body is committed (as a reading, a duplicate or
  a dead letter); 503 with ``Retry-After`` while the journal cannot write or the commit takes
  longer than ``JIAYUAN_PUSH_WAIT_S`` — never 2xx before the commit. A retry with the same
  message ids is journaled once.
- **Bad bodies**: a body the profile cannot map is one dead letter (reason ``not_json``,
  ``missing_field``…) and answered 422; a body whose every message is a dead letter too. 422 says
  "do not send this again": the same body gets the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Mapping
from typing import Annotated, Any, Final, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field

from ingest.message_keys import SEP, message_key
from ingest.payloads import DeadLetter, DeadLetterReason, decode
from ingest.profiles import Canonical, ProfileError
from ingest.push import Message, PushBusy
from ingest.push_native import MAX_MESSAGES, HttpProfile
from ingest.ways import WaysIn
from jiayuan.api.deps import ACCESS, CtxDep, client_ip
from jiayuan.integrations import Integration, PushSetup

log = logging.getLogger(__name__)

PREFIX: Final = "/api/push/"
RETRY_AFTER_S: Final = 5
PUSHES = Counter(
    "jiayuan_push_requests_total",
    "Pushes by integration and answer (ok, rejected: 422, refused: 401, limited: 429,"
    " unavailable: 503)",
    ["integration", "outcome"],
)

router = APIRouter(prefix="/api/push", tags=["push"])


class DeadLetterNote(BaseModel):
    index: int = Field(description="Position of the message in the body (0 for a lone one).")
    message_id: str | None
    reason: DeadLetterReason
    detail: str


class PushAnswer(BaseModel):
    accepted: int = Field(description="Messages journaled (or journaled before: a retry).")
    dead_letters: list[DeadLetterNote] = Field(
        description="Messages stored as dead letters, each with its reason."
    )


class PushRejected(PushAnswer):
    detail: str


def _refuse(push: PushSetup | None, name: str, ip: str, why: str, status: int = 401) -> NoReturn:
    label = name if push is not None and name in push.integrations else "unknown"
    PUSHES.labels(label, "refused").inc()
    log.warning("push refused for integration %.64r from %s: %s", name, ip, why)
    raise HTTPException(
        status,
        "unknown integration, or a missing or wrong token",
        headers={"WWW-Authenticate": 'Bearer realm="jiayuan-push"'},
    )


def integration_of(
    request: Request,
    ctx: CtxDep,
    integration: Annotated[str, Path(description="The integration's id (its declaration).")],
) -> Integration:
    """The integration whose token the request carries, or 401 (429 while this address is
    locked out for this integration). The token is checked first: the right one always gets
    through, also from a locked address (a platform that just got its new token after a
    rotation is never answered 429 for the old one's failures); only failures are counted."""
    push = ctx.push
    ip = client_ip(request)
    account = f"{integration[:64]}@{ip}"
    if push is None:
        _refuse(push, integration, ip, "push is not set up (JIAYUAN_INTEGRATIONS)")
    assert push is not None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    found = push.integrations.get(integration)
    ok = scheme.lower() == "bearer" and 0 < len(token) <= 512
    ok = push.tokens.check(integration, token if ok else "") and ok and found is not None
    if ok and found is not None:
        push.limiter.succeeded(account)
        return found
    address = f"push@{ip}"  # counted apart from staff sign-ins from that address
    wait = push.limiter.wait(account, address)
    if wait:
        PUSHES.labels("unknown", "limited").inc()
        raise HTTPException(
            429,
            f"too many failed pushes from this address: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    locked = push.limiter.failed(account, address)
    why = (
        "not a declared integration"
        if found is None
        else "no bearer token"
        if not token
        else "wrong token"
    )
    _refuse(push, integration, ip, why + (f"; locked {locked} s" if locked else ""))


setattr(integration_of, ACCESS, ())  # no staff role: the integration's own token (above)

IntegrationDep = Annotated[Integration, Depends(integration_of)]

_BODY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["message_id", "topic", "payload"],
    "properties": {
        "message_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "topic": {"type": "string", "maxLength": 256},
        "payload": {"type": "object"},
    },
}


@router.post(
    "/{integration}",
    response_model=PushAnswer,
    summary="Push device messages from a platform",
    responses={
        413: {"description": "Body larger than the limit (the profile's, or the API's)"},
        422: {"model": PushRejected, "description": "Nothing usable: kept as dead letters"},
        429: {"description": "Too many failed attempts from this address; see Retry-After"},
        503: {"description": "Not journaled now (journal failing or busy); see Retry-After"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            _BODY_SCHEMA,
                            {"type": "array", "items": _BODY_SCHEMA, "maxItems": MAX_MESSAGES},
                        ]
                    }
                }
            },
        }
    },
)
async def push_messages(ctx: CtxDep, integration: IntegrationDep, request: Request) -> Any:
    """Map the body with the integration's profile, journal its messages, answer once they are
    committed. See the README, "Push endpoint"."""
    push = ctx.push
    assert push is not None  # integration_of refused otherwise
    name = integration.id
    if not push.writable():
        return _unavailable(name, "the journal cannot write now; nothing was accepted")
    body = await request.body()
    profile = push.profiles.get(integration.profile)
    if profile is not None and profile.max_body is not None and len(body) > profile.max_body:
        PUSHES.labels(name, "rejected").inc()
        detail = (
            f"body of {len(body)} bytes, limit {profile.max_body} for profile {profile.id};"
            " nothing stored"
        )
        return JSONResponse(status_code=413, content={"detail": detail})
    messages, notes, ids = _map(integration, push.profiles, body, ctx.settings.community, ctx.ways)
    accepted = len(messages) - len(notes)
    if not messages:  # a vendor message its profile maps onto nothing (an event code not kept)
        PUSHES.labels(name, "ok").inc()
        return PushAnswer(accepted=0, dead_letters=[])
    loop = asyncio.get_running_loop()
    committed = loop.create_future()

    def done() -> None:
        if not committed.done():
            committed.set_result(None)

    def on_commit() -> None:  # the pipeline's thread
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(done)

    try:
        pushed = push.intake.submit(messages, on_commit)
    except PushBusy as e:
        return _unavailable(name, f"busy: {e}; nothing was accepted")
    deadline = time.monotonic() + ctx.settings.push_wait_s
    while not committed.done():
        try:
            await asyncio.wait_for(asyncio.shield(committed), 0.25)
        except TimeoutError:
            if not push.writable() or time.monotonic() >= deadline:
                why = "the journal cannot write now" if not push.writable() else "slow journal"
                return _unavailable(name, f"not yet journaled ({why}); send it again")
    for index, why in sorted(pushed.refused.items()):  # the journal would not keep these
        notes.append(
            DeadLetterNote(index=index, message_id=ids[index], reason="journal_refused", detail=why)
        )
        accepted -= 1
    notes.sort(key=lambda n: n.index)
    notes_out = [n.model_dump() for n in notes]
    if accepted == 0:  # and so some dead letters
        PUSHES.labels(name, "rejected").inc()
        detail = "nothing usable in the body: kept as dead letters; do not send it again"
        return JSONResponse(
            status_code=422,
            content={"detail": detail, "accepted": 0, "dead_letters": notes_out},
        )
    PUSHES.labels(name, "ok").inc()
    return PushAnswer(accepted=accepted, dead_letters=notes)


def _unavailable(name: str, detail: str) -> JSONResponse:
    PUSHES.labels(name, "unavailable").inc()
    return JSONResponse(
        status_code=503, content={"detail": detail}, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def _map(
    integration: Integration,
    profiles: Mapping[str, HttpProfile],
    body: bytes,
    community: str,
    ways: WaysIn | None = None,
) -> tuple[list[Message], list[DeadLetterNote], list[str | None]]:
    """The messages to journal for ``body``, the dead letters among them (decoded here too,
    to answer with their reasons) and each message's platform message id. A message for
    another community, for a device outside the integration's ``devices``, or for a device
    registered to report another way (its ``via`` is not this integration: ``ways``) is a dead
    letter (``unknown_topic``)."""
    source = f"push/{integration.id}"
    profile = profiles.get(integration.profile)
    try:
        if profile is None:
            raise ProfileError("bad_value", f"no profile {integration.profile!r}")
        canon = profile.from_http(body)
    except ProfileError as e:
        note = DeadLetterNote(index=0, message_id=None, reason=e.reason, detail=e.message)
        return [Message(source, body, refused=(e.reason, e.message))], [note], [None]
    except Exception as e:  # a guard: a profile's bug is the body's dead letter, never a 500
        log.exception("profile %s failed on a body pushed by %s", integration.profile, source)
        detail = f"unmappable: {type(e).__name__}"
        note = DeadLetterNote(index=0, message_id=None, reason="bad_value", detail=detail)
        return [Message(source, body, refused=("bad_value", detail))], [note], [None]
    now = time.time()
    messages: list[Message] = []
    notes: list[DeadLetterNote] = []
    ids = [None if c.key is None else c.key.partition(SEP)[0] for c in canon]
    for i, (c, key) in enumerate(zip(canon, _keys(integration.id, canon), strict=True)):
        mid = ids[i]
        if c.refused is not None:  # a part the profile could not translate
            reason, why = c.refused
            notes.append(DeadLetterNote(index=i, message_id=mid, reason=reason, detail=why))
            messages.append(Message(c.topic, body, None, c.refused))
            continue
        d = decode(c.topic, c.payload, now)
        refused: tuple[DeadLetterReason, str] | None = None
        if isinstance(d, DeadLetter):
            notes.append(DeadLetterNote(index=i, message_id=mid, reason=d.reason, detail=d.detail))
        elif (
            wrong := _not_its_own(integration, community, ways, d.community, d.device_id)
        ) is not None:
            refused = ("unknown_topic", wrong)
            notes.append(
                DeadLetterNote(index=i, message_id=mid, reason="unknown_topic", detail=wrong)
            )
        messages.append(Message(c.topic, c.payload, key, refused))
    return messages, notes, ids


def _not_its_own(
    integration: Integration, community: str, ways: WaysIn | None, of: str, device_id: str
) -> str | None:
    """Why ``integration`` may not speak for ``device_id`` of community ``of``, or None: a
    community not installed, or not the one the device is registered in."""
    ours = ways.communities if ways is not None and ways.communities else {community}
    if of not in ours:
        return f"community {of[:64]!r} is not this service's"
    registered = ways.community_of(device_id) if ways is not None else None
    if registered is not None and registered != of:
        return f"device {device_id} is registered in community {registered!r}, not {of[:64]!r}"
    if not integration.may_report(device_id):
        return f"device {device_id} is not among integration {integration.id}'s devices"
    way = ways.refusal(device_id, integration.id) if ways is not None else None
    return None if way is None else f"integration {integration.id}: {way}"


def _keys(integration: str, canon: list[Canonical]) -> list[str | None]:
    """Each message's duplicate key: the integration and the platform's message id, and its
    place among the messages of the body with that same id (one platform message may map onto
    several)."""
    seen: Tally[str] = Tally()
    out: list[str | None] = []
    for c in canon:
        if c.key is None:
            out.append(None)
            continue
        n = seen[c.key]
        seen[c.key] += 1
        out.append(message_key(integration, c.key, part=n))
    return out
