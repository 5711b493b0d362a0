"""``make demo``'s staff accounts: known passwords for a guard, a caretaker, a manager, an
operator and an admin of the simulated community, set in the service's ``auth.db`` (as
``jiayuan staff password`` would, audited) and listed in a file beside the demo's data. The
simulator knows nothing of them."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from jiayuan.auth.manage import set_password
from jiayuan.auth.store import AuthStore
from registry import Registry

DEMO_STAFF: Final = (
    ("security", "sec-ctl-1", "jiayuan-guard-demo"),
    ("caretaker", "care-C01-01", "jiayuan-care-demo"),
    ("manager", "mgr-1", "jiayuan-manager-demo"),
    ("operator", "ops-1", "jiayuan-ops-demo"),
    ("admin", "adm-1", "jiayuan-admin-demo"),
)


def seed(auth_db: Path, registry: Registry, listing: Path) -> list[tuple[str, str, str]]:
    """Set the demo passwords of those in ``registry`` (role, staff id, password) and write
    them to ``listing`` (0600). For demonstration only: real accounts get real passwords."""
    store = AuthStore(auth_db)
    seeded: list[tuple[str, str, str]] = []
    for role, staff_id, password in DEMO_STAFF:
        staff = registry.staff.get(staff_id)
        if staff is None or staff.role != role:
            continue
        if store.password_hash(staff_id) is None:  # kept across runs (sessions stay valid)
            set_password(store, registry, staff_id, password, "demo")
        seeded.append((role, staff_id, password))
    listing.write_text(
        "# make demo: staff sign-in (demo passwords, never for real use)\n"
        + "".join(f"{role:<10} {sid:<14} {pw}\n" for role, sid, pw in seeded),
        encoding="utf-8",
    )
    listing.chmod(0o600)
    return seeded


def banner(seeded: list[tuple[str, str, str]], admin_token: str, url: str, listing: Path) -> str:
    """The lines ``make demo`` prints about signing in."""
    rows = "".join(f"                  {role:<10} {sid:<13} {pw}\n" for role, sid, pw in seeded)
    return (
        "  Staff sign-in   on the console (demo passwords; `jiayuan staff password ID` sets\n"
        f"                  real ones), also in {listing}:\n"
        f"{rows}"
        "                  a caretaker sees their own residents only; health data only\n"
        "                  reaches the resident's caretakers; the admin sees GET /api/audit\n"
        f"  Admin token     {admin_token}\n"
        "                  for programs (demo only), e.g. curl -H 'Authorization: Bearer\n"
        f"                  <token>' {url}/metrics\n"
    )
