"""The journal's duplicate keys of messages that come with their source's own id (an HTTP
platform's message id): one scheme for every source, so that no two messages share a key by
accident.

A key is levels joined by :data:`SEP` (the ASCII unit separator, which no message id may hold):
the integration, the platform's message id, ``@<ms>`` when the message carries its own time
(a device that restarts its counter is not taken for a retry), ``#<n>`` for the n-th further
message one platform message was mapped onto. No level holds :data:`SEP`, so two different
messages never make the same key; a message id longer than :data:`MAX_MESSAGE_ID` is refused,
never cut (two ids alike in their first 128 characters would be one).
"""

from __future__ import annotations

from typing import Final

SEP: Final = "\x1f"
MAX_MESSAGE_ID: Final = 128


def message_id_problem(mid: str) -> str | None:
    """Why ``mid`` cannot be a message id (empty, too long, a control character), or None."""
    if not mid:
        return "message id is empty"
    if len(mid) > MAX_MESSAGE_ID:
        return f"message id of {len(mid)} characters, limit {MAX_MESSAGE_ID}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in mid):
        return "message id holds a control character"
    return None


def message_key(*levels: str, at: int | None = None, part: int = 0) -> str:
    """The key of ``levels`` (ids passed by :func:`message_id_problem`, or a key made here as
    the last level), at time ``at`` (epoch ms), the ``part``-th further message of one source
    message."""
    out = SEP.join(levels)
    if at is not None:
        out += f"{SEP}@{at}"
    if part:
        out += f"{SEP}#{part}"
    return out
