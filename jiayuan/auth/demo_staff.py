"""``make demo``'s staff accounts: known passwords for guards, caretakers, the duty managers, an
operator and an admin of the simulated community, set in the service's ``auth.db`` (as
``jiayuan staff password`` would, audited) and listed in a file beside the demo's data. The
simulator knows nothing of them.

The sign-ins printed first are of staff ON DUTY NOW (the roster's local time): a newcomer who
signs in as the printed guard or caretaker sees alerts arrive. The others are listed with when
their shift starts, for when the demo runs across a shift change."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from alerts.routing import on_duty
from jiayuan.auth.manage import set_password
from jiayuan.auth.store import AuthStore
from registry import Registry

PASSWORDS: Final[dict[str, str]] = {
    "security": "jiayuan-guard-demo",
    "caretaker": "jiayuan-care-demo",
    "manager": "jiayuan-manager-demo",
    "operator": "jiayuan-ops-demo",
    "admin": "jiayuan-admin-demo",
    "district_manager": "jiayuan-district-demo",
}
CANDIDATES: Final[dict[str, tuple[str, ...]]] = {
    "security": ("sec-ctl-1", "sec-ctl-2"),  # the control room: day, night
    "caretaker": ("care-C01-01", "care-C01-02", "care-night-1"),  # Mon-Fri, Wed-Sun, nights
    "manager": ("mgr-1", "mgr-2"),
    "operator": ("ops-1",),
    "admin": ("adm-1",),
    "district_manager": ("dm-1",),  # make demo with two communities (devtools/demo.py)
}
"""Who gets a demo password, per role, in the order preferred when several are on duty."""


@dataclass(frozen=True, slots=True)
class DemoLogin:
    role: str
    staff_id: str
    password: str
    on_duty: bool
    """On duty when the demo started (alerts reach them now)."""
    when: str = ""
    """``until 17:00`` (on duty) or ``from 17:00`` (off duty): their shift, local time."""


def logins(
    registry: Registry, now: float | None = None, tz: ZoneInfo | None = None
) -> list[DemoLogin]:
    """The demo sign-ins of those in ``registry``, those on duty now first."""
    tz = tz or ZoneInfo("Asia/Shanghai")
    at = datetime.fromtimestamp(time.time() if now is None else now, tz)
    out: list[DemoLogin] = []
    for role, ids in CANDIDATES.items():
        present = [
            s for sid in ids if (s := registry.staff.get(sid)) is not None and s.role == role
        ]
        for s in present:
            here = on_duty(s, at)
            out.append(
                DemoLogin(role, s.staff_id, PASSWORDS[role], here, _when(s.staff_id, registry, at))
            )
    return sorted(out, key=lambda d: not d.on_duty)


def _when(staff_id: str, registry: Registry, at: datetime) -> str:
    """``until HH:MM`` while on duty, ``from HH:MM`` (the next half hour on duty) otherwise."""
    s = registry.staff[staff_id]
    if not s.shifts:
        return "always on call"
    now_on = on_duty(s, at)
    step = at.replace(minute=(at.minute // 30) * 30, second=0, microsecond=0)
    for k in range(1, 7 * 48 + 1):
        t = datetime.fromtimestamp(step.timestamp() + k * 1800, at.tzinfo)
        if on_duty(s, t) != now_on:
            day = "" if t.date() == at.date() else t.strftime("%a ")
            return f"{'until' if now_on else 'from'} {day}{t:%H:%M}"
    return "on duty all week" if now_on else "never on duty"


def seed(
    auth_db: Path | str, registry: Registry, listing: Path, tz: ZoneInfo | None = None
) -> list[DemoLogin]:
    """Set the demo passwords of those in ``registry`` and write them to ``listing`` (0600),
    on duty now first; ``auth_db`` is ``auth.db``'s path or the PostgreSQL URL. For
    demonstration only: real accounts get real passwords."""
    store = AuthStore.open(auth_db)
    seeded = logins(registry, tz=tz)
    for login in seeded:
        if store.password_hash(login.staff_id) is None:  # kept across runs (sessions stay valid)
            set_password(store, registry, login.staff_id, login.password, "demo")
    listing.write_text(
        "# make demo: staff sign-in (demo passwords, never for real use)\n"
        + "".join(_row(d) for d in seeded),
        encoding="utf-8",
    )
    listing.chmod(0o600)
    return seeded


def _row(d: DemoLogin) -> str:
    duty = "ON DUTY NOW" if d.on_duty else "off duty now"
    return f"{d.role:<10} {d.staff_id:<13} {d.password:<22} {duty}, {d.when}\n"


def banner(seeded: list[DemoLogin], admin_token: str, url: str, listing: Path) -> str:
    """The lines ``make demo`` prints about signing in."""
    shown: dict[str, DemoLogin] = {}
    for d in seeded:  # on duty first: one per role, on duty when anyone of it is
        shown.setdefault(d.role, d)
    rows = "".join(f"                  {_row(d)}" for d in shown.values())
    return (
        "  Staff sign-in   on the console (demo passwords; `jiayuan staff password ID` sets\n"
        "                  real ones); alerts reach those ON DUTY NOW as they happen:\n"
        f"{rows}"
        f"                  more (for after a shift change) in {listing}\n"
        "                  a caretaker sees their own residents only; health data only\n"
        "                  reaches the resident's caretakers; the admin sees GET /api/audit\n"
        f"  Admin token     {admin_token}\n"
        "                  for programs (demo only), e.g. curl -H 'Authorization: Bearer\n"
        f"                  <token>' {url}/metrics\n"
    )
