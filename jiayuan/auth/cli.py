"""``jiayuan staff``: set or remove a staff member's password, list who can sign in.

Uses the service's settings (``JIAYUAN_DATA_DIR`` for ``auth.db``, ``JIAYUAN_REGISTRY`` for who
the staff are). A password is read from the terminal (twice, not echoed) or, with ``--stdin``,
from the first line of standard input (for scripts); it never appears in the command line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jiayuan.auth.store import AuthStore
    from registry import Registry


def add_arguments(staff: argparse.ArgumentParser) -> None:
    sub = staff.add_subparsers(dest="staff_command", required=True)
    pw = sub.add_parser("password", help="set (or --remove) a staff member's password")
    pw.add_argument("staff_id")
    pw.add_argument(
        "--stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    pw.add_argument(
        "--remove",
        action="store_true",
        help="remove the password: the person can no longer sign in",
    )
    pw.set_defaults(func=_password)
    ls = sub.add_parser("list", help="staff of the registry and whether each can sign in")
    ls.set_defaults(func=_list)


def _open() -> tuple[AuthStore, Registry] | None:
    from jiayuan.auth.store import installed
    from jiayuan.cli import settings_from_env
    from registry import RegistryError
    from registry.communities import load_communities

    settings = settings_from_env()
    if settings is None:
        return None
    if settings.registry is None and not settings.communities:
        print(
            "jiayuan staff: JIAYUAN_REGISTRY is not set; staff accounts come from the registry",
            file=sys.stderr,
        )
        return None
    try:  # communities: every community's staff
        registry = load_communities(settings.community_registries())
    except RegistryError as e:
        print(e, file=sys.stderr)
        return None
    return installed(settings), registry


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _password(args: argparse.Namespace) -> int:
    from jiayuan.auth.manage import UnknownStaff, remove_password, set_password
    from jiayuan.auth.passwords import WeakPassword

    opened = _open()
    if opened is None:
        return 2
    store, registry = opened
    if args.remove:
        if not remove_password(store, args.staff_id, _actor()):
            print(f"{args.staff_id} has no password", file=sys.stderr)
            return 1
        print(f"password of {args.staff_id} removed; their sessions are ended")
        return 0
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"new password for {args.staff_id}: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ; nothing changed", file=sys.stderr)
            return 1
    try:
        ended = set_password(store, registry, args.staff_id, password, _actor())
    except (UnknownStaff, WeakPassword) as e:
        print(f"jiayuan staff: {e.args[0]}; nothing changed", file=sys.stderr)
        return 1
    print(f"password of {args.staff_id} set" + (f"; {ended} session(s) ended" if ended else ""))
    return 0


def _list(args: argparse.Namespace) -> int:
    opened = _open()
    if opened is None:
        return 2
    store, registry = opened
    can = store.with_password()
    for s in sorted(registry.staff.values(), key=lambda s: (s.role, s.staff_id)):
        print(f"{s.staff_id:<24} {s.role:<10} {'password set' if s.staff_id in can else '-'}")
    return 0
