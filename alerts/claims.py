"""Claims on due escalation steps and deliveries, when several instances share one PostgreSQL.

With one instance on SQLite nothing is claimed: a step is taken by a compare-and-set on its
timer row and the notifier sends what it was handed, exactly as before. On PostgreSQL every
dispatcher polls the same ``escalations`` and ``deliveries`` rows, so each row is claimed before
it is worked on, in place (three columns of its own table, migration 0006):

- ``claimed_by`` — the instance holding it, until ``claim_until`` (epoch seconds of the
  *database's* clock, so instances' clocks do not matter; a claim whose time has passed is
  anybody's: a dead instance's work is taken over after ``claim_s``);
- ``claims`` — how many times the row was claimed: the claim's token. The step's
  compare-and-set (:meth:`alerts.escalation.Timers.move`) and the delivery's receipt
  (:class:`alerts.notify.Notifier`) include ``claims = <the token held>``, so a holder whose
  claim expired and was taken by another instance is refused: nothing it does afterwards
  commits.

Due timers are claimed in batches with ``FOR UPDATE SKIP LOCKED`` (concurrent pollers skip each
other's rows instead of waiting or taking the same ones); a delivery is claimed alone, by a
conditional ``UPDATE`` of its row just before it is sent (two notifiers on one row: the second
waits for the first's commit, sees the row claimed and skips it).

Why in place rather than :class:`district.claims.WorkQueue`'s ``work_items``: the timer and the
outbox row already are the work items — due time, state, attempts, cancel, merge, hasten and
release all act on them, on both backends, in the transactions that decide them. A second
table would have to mirror every one of those changes (a cancelled delivery, a hastened step,
a held message's new body), and its due times are the database's clock while the stages run on
the dispatcher's (a fake one in tests). docs/district.md has the rest.

What remains is every outbox's window: an instance that handed a message to a channel and died
(or stalled past ``claim_s``) before its receipt committed leaves a delivery that is sent again.
The delivery's id travels with the message as its idempotency key (:func:`with_key`) so that a
receiver can drop the repeat.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Final
from urllib.parse import urlsplit, urlunsplit

CLAIM_S: Final = 30.0
"""How long a claim lasts: well above a channel's timeout (apprise's are seconds) and a step's
few transactions."""
DB_NOW: Final = "extract(epoch from clock_timestamp())"
"""The database's clock, in epoch seconds."""
CLAIMABLE: Final = f"(claim_until IS NULL OR claim_until <= {DB_NOW})"
"""A row nobody holds, or whose holder's claim has expired."""
RELEASE: Final = "claimed_by = NULL, claim_until = NULL"


def instance_id() -> str:
    """This instance's name in the claim columns: host, process and a random part (two
    dispatchers in one process, as in the tests, are two instances)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


KEY_HEADERS: Final[dict[str, str]] = {
    "json": "Idempotency-Key",
    "jsons": "Idempotency-Key",
    "xml": "Idempotency-Key",
    "xmls": "Idempotency-Key",
    "form": "Idempotency-Key",
    "forms": "Idempotency-Key",
    "mailto": "X-Idempotency-Key",
    "mailtos": "X-Idempotency-Key",
}
"""The apprise schemes that can carry a header of ours (apprise's ``+Name=value`` URL
arguments): HTTP webhooks (the IETF draft's ``Idempotency-Key``) and e-mail. An e-mail's
``Message-ID`` is apprise's own (it sets one after the headers it is given), so the key goes in
a header beside it. Other channels (chat bots) have nowhere to put it."""


def with_key(url: str, key: str) -> str:
    """``url`` with ``key`` as the idempotency header of its scheme, or ``url`` as it is."""
    parts = urlsplit(url)
    header = KEY_HEADERS.get(parts.scheme.lower())
    if header is None or not key:
        return url
    extra = f"%2B{header}={key}"
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))
