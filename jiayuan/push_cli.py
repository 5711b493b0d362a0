"""``jiayuan push``: issue, revoke and list the tokens of the integrations that may push.

Uses the service's settings: ``JIAYUAN_INTEGRATIONS`` (who may push) and ``JIAYUAN_DATA_DIR``
(where the digests are kept). A token is printed once, on standard output, and never stored;
the running service takes a new or revoked token at its next push, without a restart.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jiayuan.auth.audit import AuditLog
    from jiayuan.integrations import Integration, PushTokens


def add_arguments(push: argparse.ArgumentParser) -> None:
    sub = push.add_subparsers(dest="push_command", required=True)
    token = sub.add_parser(
        "token",
        help="issue a new token for an integration (printed once; its previous one stops working)",
    )
    token.add_argument("integration")
    token.set_defaults(func=_token)
    revoke = sub.add_parser("revoke", help="revoke an integration's token: it can no longer push")
    revoke.add_argument("integration")
    revoke.set_defaults(func=_revoke)
    ls = sub.add_parser("list", help="the integrations declared, their profile and token")
    ls.set_defaults(func=_list)


def _open() -> tuple[dict[str, Integration], PushTokens, AuditLog] | None:
    from ingest.profiles import ProfileFileError, load_profiles
    from ingest.push_native import push_profiles
    from jiayuan.auth.audit import AuditLog
    from jiayuan.auth.store import installed
    from jiayuan.cli import settings_from_env
    from jiayuan.integrations import IntegrationError, PushTokens, load_integrations

    settings = settings_from_env()
    if settings is None:
        return None
    if settings.integrations is None:
        print("jiayuan push: JIAYUAN_INTEGRATIONS is not set: no integration", file=sys.stderr)
        return None
    try:
        profiles = push_profiles(load_profiles(settings.profile_files(), settings.community))
        found = load_integrations(settings.integrations, profiles)
    except (IntegrationError, ProfileFileError) as e:
        print(e, file=sys.stderr)
        return None
    store = installed(settings)
    return found, PushTokens(settings.data_dir, store), AuditLog(store)


def _token(args: argparse.Namespace) -> int:
    got = _open()
    if got is None:
        return 2
    found, tokens, audit = got
    if args.integration not in found:
        print(f"jiayuan push: {args.integration!r} is not declared", file=sys.stderr)
        return 2
    token = tokens.issue(args.integration)
    audit.record("cli", "push.token_issued", target=args.integration)
    print(token)
    print(f"jiayuan push: token for {args.integration}, shown this once", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    got = _open()
    if got is None:
        return 2
    _found, tokens, audit = got
    if not tokens.revoke(args.integration):
        print(f"jiayuan push: {args.integration!r} has no token", file=sys.stderr)
        return 1
    audit.record("cli", "push.token_revoked", target=args.integration)
    return 0


def _list(args: argparse.Namespace) -> int:
    got = _open()
    if got is None:
        return 2
    found, tokens, _audit = got
    for name, i in sorted(found.items()):
        r = tokens.issued(name)
        issued = "" if r is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(r.issued_at))
        state = "no token" if r is None else f"token {r.hint}… issued {issued}"
        print(f"{name}\tprofile {i.profile}\t{state}")
    return 0
