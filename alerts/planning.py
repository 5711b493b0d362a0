"""Which step of a chain to take now, and whom it pages: the one place that decides, used by the
paging stage (:mod:`alerts.paging`) and by the duty coverage check (:mod:`alerts.coverage`).

- The first step pages whoever it finds on duty.
- A later step must reach someone new: a step whose people were all paged already (or that
  finds nobody on duty) is passed over at once for the next one; those it names who were
  paged before are reminded along with the new ones.
- When the last step reaches nobody new, an urgent alert (an alarm, or critical or major) falls
  back to the security desk and the duty manager on duty.
- Past the last step (a repeat) the last step's people, or the fallback's, are reminded.
- Nobody on duty anywhere: the plan says so (``unreached``); the caller records it as trouble.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

from alerts.escalation import Chain
from alerts.model import Alert
from alerts.routing import Target

FALLBACK: Final = ("security_desk", "manager")
Resolve = Callable[[Sequence[str]], list[Target]]


@dataclass(frozen=True, slots=True)
class Skipped:
    step: int
    why: str
    """``nobody on duty``, ``no notification channel`` or ``everyone already paged``."""
    selectors: tuple[str, ...]
    targets: tuple[Target, ...]
    """Whom the step named (on duty), channel or not."""


@dataclass(frozen=True, slots=True)
class Plan:
    step: int
    """The step taken (0-based; at or past ``len(chain.steps)``: a repeat)."""
    targets: tuple[Target, ...]
    """Everyone to message (with a channel), in the order named: new people and those
    reminded."""
    new: frozenset[str]
    """Staff ids among ``targets`` not paged before."""
    skipped: tuple[Skipped, ...] = ()
    """Steps passed over, and why."""
    fallback: bool = False
    """The targets are the security desk and the duty manager (the chain found nobody new)."""
    selectors: tuple[str, ...] = field(default=())

    @property
    def unreached(self) -> bool:
        return not self.targets


def urgent(a: Alert) -> bool:
    """Worth waking the security desk and the duty manager when nobody else is on duty."""
    return a.signal == "alarm" or a.severity in ("critical", "major")


def reachable(targets: Sequence[Target]) -> list[Target]:
    return [t for t in targets if t.channels]


def plan(
    chain: Chain, step: int, resolve: Resolve, paged: Collection[str], *, urgent: bool
) -> Plan:
    """What to do for step ``step`` of ``chain`` now, ``paged`` being everyone paged before."""
    n = len(chain.steps)
    skipped: list[Skipped] = []
    s = step
    while s < n:
        sels = chain.steps[s].to
        named = resolve(sels)
        targets = reachable(named)
        new = [t for t in targets if t.staff_id not in paged]
        if new or (s == 0 and targets):
            return _plan(s, targets, paged, skipped, False, sels)
        why = (
            "everyone already paged"
            if targets
            else "no notification channel"
            if named
            else "nobody on duty"
        )
        skipped.append(Skipped(s, why, tuple(sels), tuple(named)))
        if s + 1 >= n:
            break
        s += 1
    if s >= n:  # a repeat: the last step's people again, or the fallback's
        sels = chain.steps[-1].to
        targets = reachable(resolve(sels))
        if targets:
            return _plan(s, targets, paged, skipped, False, sels)
    if urgent:
        targets = reachable(resolve(FALLBACK))
        if s >= n or any(t.staff_id not in paged for t in targets):
            return _plan(s, targets, paged, skipped, True, FALLBACK)
    return Plan(s, (), frozenset(), tuple(skipped), False, chain.steps[min(s, n - 1)].to)


def _plan(
    s: int,
    targets: Sequence[Target],
    paged: Collection[str],
    skipped: list[Skipped],
    fallback: bool,
    sels: Sequence[str],
) -> Plan:
    new = [t for t in targets if t.staff_id not in paged]
    return Plan(
        s,
        tuple(targets),
        frozenset(t.staff_id for t in new),
        tuple(skipped),
        fallback,
        tuple(sels),
    )
