"""The alerting parts' settings, one model per part, each handed to the part that uses it.

``jiayuan.settings.Settings`` holds them as nested fields (``settings.notify``,
``settings.flap``, ``settings.group``, ``settings.escalation``) read from the same environment
variables as ever (``JIAYUAN_NOTIFY_BACKOFF_S`` is ``notify.backoff_s``); tests build them
directly. :class:`Config` is what the dispatcher is given: these models plus the few
community-wide settings the messages need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from base.retry import Backoff

if TYPE_CHECKING:
    from alerts.notify import Sender

_PART = ConfigDict(frozen=True, extra="ignore")
"""Unknown ``JIAYUAN_NOTIFY_*`` (…) variables are ignored, as they were before the grouping."""


class NotifyConfig(BaseModel):
    """Delivery (alerts/notify.py): ``JIAYUAN_NOTIFY_*``."""

    model_config = _PART
    workers: int = Field(default=4, ge=1, le=64)
    """Threads sending notifications (apprise calls block; one channel uses one at a time)."""
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_s: float = Field(default=2.0, gt=0, le=600)
    """Wait before the first retry of a failed delivery; doubles with each attempt."""
    backoff_max_s: float = Field(default=120.0, gt=0, le=3600)

    @property
    def backoff(self) -> Backoff:
        """The retry policy of a failed delivery (deterministic: the outbox stores the time)."""
        return Backoff(self.backoff_s, self.backoff_max_s)


class FlapConfig(BaseModel):
    """The flapping gate (alerts/noise.py): ``JIAYUAN_FLAP_*``."""

    model_config = _PART
    threshold: int = Field(default=3, ge=1)
    """An alert that fires and clears more than this many times within ``window_s`` flaps."""
    window_s: float = Field(default=600.0, gt=0)


class GroupConfig(BaseModel):
    """Grouping a building's trouble into one incident (alerts/stages.py): ``JIAYUAN_GROUP_*``."""

    model_config = _PART
    wait_s: float = Field(default=60.0, ge=0, le=3600)
    """How long a device's trouble alert waits to see whether it is one of many in its
    building (alarms never wait)."""
    window_s: float = Field(default=3600.0, gt=0)
    threshold: int = Field(default=5, ge=2)
    """Trouble alerts from this many devices of one building within ``window_s`` become one
    incident."""


class EscalationConfig(BaseModel):
    """Escalation chains (alerts/escalation.py): ``JIAYUAN_ESCALATION_*``."""

    model_config = _PART
    file: Path | None = None
    """Escalation chains (YAML, the format of alerts/chains.yaml); none: the built-in chains."""
    claim_s: float = Field(default=5.0, gt=0, le=600)
    """How long a dispatcher's claim on a due escalation step lasts on PostgreSQL: another
    instance takes a dead one's steps after it. Shorter than a delivery's claim
    (:attr:`Config.claim_s`): a step is database work only (plan, timer, outbox rows, one
    transaction whose compare-and-set on the claim refuses a holder that was overtaken), so
    taking it again costs nothing but the work; a delivery's claim covers a send that cannot
    be taken back, and must outlast the channel's slowest answer."""


@dataclass(frozen=True, slots=True)
class Config:
    """What :class:`alerts.dispatch.Dispatcher` is given."""

    language: Literal["zh", "en"] = "zh"
    base_url: str = "http://127.0.0.1:8080"
    timezone: str = "Asia/Shanghai"
    community: str = "y"
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    flap: FlapConfig = field(default_factory=FlapConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    sender: Sender | None = field(default=None, compare=False)
    """Sends one message (tests: a fake); none: apprise."""
    instance: str = ""
    """This instance's name in the claims of escalation steps and deliveries on PostgreSQL
    (:mod:`alerts.claims`); empty: host, process id and a random part."""
    claim_s: float = 30.0
    """How long a claim on a delivery lasts: another instance sends a dead one's claimed
    message after it (the same idempotency key). Escalation steps have their own, shorter
    claim: ``escalation.claim_s``."""
