"""The ``jiayuan`` command: ``run``, ``simulate``, ``rules check``, ``rules backtest``,
``profiles check``, ``registry check``, ``registry import``, ``broker credentials``,
``broker tls``, ``duty check``, ``push token``."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jiayuan.service import Service
    from jiayuan.settings import Settings


def settings_from_env() -> Settings | None:
    """The service's settings from the ``JIAYUAN_*`` environment variables; None, said on
    standard error, when they are bad (every command that reads them)."""
    from pydantic import ValidationError

    from jiayuan.settings import Settings

    try:
        return Settings()
    except ValidationError as e:
        lines = [f"jiayuan: bad settings (JIAYUAN_* environment variables):\n{e}"]
        for err in e.errors():
            field = str(err["loc"][0]).upper() if err["loc"] else ""
            parts = sorted(k for k in os.environ if field and k.startswith(f"JIAYUAN_{field}_"))
            if parts and f"JIAYUAN_{field}" not in parts:
                lines.append(
                    f"{', '.join(parts)}: read as part of JIAYUAN_{field} (a setting's parts are"
                    f" JIAYUAN_<SETTING>_<PART>); is it a misspelt name? unset it or correct it"
                )
        print("\n".join(lines), file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    # first thing: SIGHUP (read the registry files again) only asks; a reload asked while the
    # service is being built waits for it instead of ending the process (the default action)
    reloads: queue.SimpleQueue[bool] = queue.SimpleQueue()
    signal.signal(signal.SIGHUP, lambda _s, _f: reloads.put(True))

    import psycopg

    from base.heap import freeze_startup_heap
    from ingest.profiles import ProfileFileError
    from jiayuan.api import create_app, make_server
    from jiayuan.integrations import IntegrationError
    from jiayuan.logmetrics import count_errors
    from jiayuan.service import Service
    from registry import RegistryError

    settings = settings_from_env()
    if settings is None:
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    count_errors()  # from the start: an error while the stores open counts too
    if settings.demo:
        logging.getLogger("jiayuan").warning(
            "demo mode (JIAYUAN_DEMO): weak secrets are accepted; never run it like this for real"
        )
    try:
        service = Service(settings)
    except ProfileFileError as e:
        print(f"jiayuan: bad device profiles (JIAYUAN_PROFILES):\n{e}", file=sys.stderr)
        return 2
    except IntegrationError as e:
        print(f"jiayuan: bad push integrations (JIAYUAN_INTEGRATIONS):\n{e}", file=sys.stderr)
        return 2
    except RegistryError as e:
        print(f"jiayuan: the registry does not load:\n{e}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as e:  # the server's words: never the password
        print(
            f"jiayuan: the database (JIAYUAN_DATABASE_URL) cannot be reached: {e}", file=sys.stderr
        )
        return 2
    app = create_app(service.context)
    # uvicorn handles SIGINT/SIGTERM, shuts the API down, then raises the signal again with
    # the handlers it found: make those end the run through ``finally`` so the service stops
    # cleanly (batch committed and acknowledged, session kept) instead of dying mid-way.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    server = make_server(app, settings.http_host, settings.http_port)
    service.start()
    frozen = freeze_startup_heap()
    logging.getLogger("jiayuan").info(
        "startup heap kept out of full garbage collections: %d objects", frozen
    )
    reloader = threading.Thread(
        target=reload_registry, args=(service, reloads), name="registry-reload", daemon=True
    )
    reloader.start()
    code = 0
    try:
        server.run()
    except SystemExit as e:  # 0 from a signal (below); uvicorn's own when it cannot listen
        code = e.code if isinstance(e.code, int) else 1
    finally:
        reloads.put(False)
        service.stop()
        logging.getLogger("jiayuan").info("jiayuan stopped")
    if code == 0 and not server.started:
        code = 1  # the API never listened (uvicorn said why): not a clean run
    return code


def reload_registry(service: Service, reloads: queue.SimpleQueue[bool]) -> None:
    """The one thread that reads the registry files again for SIGHUP (the handler only puts
    ``True`` on ``reloads``; ``False`` ends the thread). Requests that came meanwhile are one
    reload: each reads the files as they are then."""
    from jiayuan.registry_admin import without_value
    from jiayuan.registry_files import NotWritable
    from registry import RegistryError

    log = logging.getLogger("jiayuan")
    while reloads.get():
        while not reloads.empty():
            if not reloads.get():
                return
        try:
            applied = service.registry_admin.reload(actor="system:SIGHUP")
        except (RegistryError, NotWritable) as e:
            # where and why, never the values refused (a resident's name, say)
            problems = e.problems if isinstance(e, RegistryError) else [e]
            said = "; ".join(without_value(p) for p in problems[:10])
            log.warning("SIGHUP: registry files refused, the running registry stays: %s", said)
            continue
        except Exception:  # the thread goes on: the next SIGHUP tries again
            log.exception("SIGHUP: reading the registry files again failed")
            continue
        log.info("SIGHUP: registry reloaded: %s", applied.diff.summary())


def _exit_cleanly(signum: int, _frame: object) -> None:
    # Once: a second Ctrl-C (a terminal sends one to every process of the group, and the demo
    # may follow with SIGTERM) must not break off the clean stop already under way.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(0)


def _rules_check(args: argparse.Namespace) -> int:
    from rules.check import main as check_main

    return check_main([str(p) for p in args.files])


def _profiles_check(args: argparse.Namespace) -> int:
    from ingest.profile_model import check_main

    return check_main(list(args.files))


def _rules_backtest(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from jiayuan.backtest import parse_when, run
    from rules.model import RuleFileError, load_rules, parse_duration

    settings = settings_from_env()
    if settings is None:
        return 2
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    tz = ZoneInfo(settings.timezone)
    try:
        rules = load_rules(args.files)
        since, until = parse_when(args.since, tz), parse_when(args.until, tz)
        report = run(
            settings, rules, since, until, warmup_s=parse_duration(args.warmup), jobs=args.jobs
        )
    except RuleFileError as e:
        print(e, file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"jiayuan rules backtest: {e}", file=sys.stderr)
        return 2
    print(report.text())
    return 0


def _registry_check(args: argparse.Namespace) -> int:
    from registry.loader import RegistryError, load_registry

    try:
        reg = load_registry(args.path)
    except RegistryError as e:
        print(e, file=sys.stderr)
        return 1
    print(
        f"OK: {len(reg.buildings)} buildings, {len(reg.devices)} devices, "
        f"{len(reg.residents)} residents, {len(reg.staff)} staff in {args.path}"
    )
    return 0


def _registry_import(args: argparse.Namespace) -> int:
    from jiayuan.registry_files import NotWritable, RegistryFiles
    from registry.diff import diff
    from registry.loader import RegistryError, load_registry

    directory = args.registry or os.environ.get("JIAYUAN_REGISTRY")
    if not directory:
        print(
            "jiayuan registry import: --registry DIR (or JIAYUAN_REGISTRY) is needed",
            file=sys.stderr,
        )
        return 2
    files = RegistryFiles(Path(directory), args.community)
    try:
        current = files.read()
        new = load_registry(args.files, community=args.community, base=current)
    except (RegistryError, NotWritable) as e:
        print(e, file=sys.stderr)
        return 1
    change = diff(current, new)
    print(change.text())
    if change.empty or not args.apply:
        if not change.empty:
            print("(not applied: run again with --apply)")
        return 0
    try:
        superseded = files.write(new)
    except (RegistryError, NotWritable, OSError) as e:
        print(f"jiayuan registry import: not applied: {e}", file=sys.stderr)
        return 1
    print(f"applied: written to {directory} as buildings/devices/residents/staff.yaml")
    if superseded:
        print(f"moved aside to {directory}/superseded: {', '.join(superseded)}")
    print("a running service takes it on SIGHUP or POST /api/registry/reload")
    return 0


def _broker_credentials(args: argparse.Namespace) -> int:
    from ingest.profile_model import profile_files
    from ingest.profiles import load_profiles
    from jiayuan.broker.accounts import write_credentials
    from jiayuan.settings import split_communities
    from registry.communities import load_communities
    from registry.loader import RegistryError, load_registry

    given = args.profiles if args.profiles is not None else os.environ.get("JIAYUAN_PROFILES")
    files = None if given is None else [Path(p.strip()) for p in given.split(",") if p.strip()]
    try:
        if "=" in str(args.registry):  # communities: y=DIR,h=DIR, each device its own ACL
            reg = load_communities(split_communities(str(args.registry)))
        else:
            reg = load_registry(args.registry, community=args.community)
        profiles = load_profiles(profile_files(files), reg.community)
        report = write_credentials(
            reg,
            args.out,
            gateways=args.gateways,
            rotate=args.rotate or (),
            group=args.group,
            profiles=profiles,
        )
    except (RegistryError, ValueError, KeyError, OSError) as e:
        print(f"jiayuan broker credentials: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    print(
        f"Mosquitto reads {args.out / 'passwords'} and {args.out / 'acl'}: reload it to apply"
        " (SIGHUP, `systemctl reload mosquitto`). Passwords for provisioning are in"
        f" {args.out / 'credentials.json'}; the service's in {args.out / 'service.password'}"
        f" and {args.out / 'urgent.password'} (its urgent session's account)."
    )
    return 0


def _broker_tls(args: argparse.Namespace) -> int:
    from jiayuan.broker.tls import TlsError, make_tls

    try:
        files = make_tls(
            args.out, args.host or ("127.0.0.1", "localhost"), renew=args.renew, group=args.group
        )
    except (TlsError, ValueError, KeyError, OSError) as e:
        print(f"jiayuan broker tls: {e}", file=sys.stderr)
        return 1
    made = " and ".join(files.made) or "nothing (all current)"
    print(f"made {made} in {args.out}: clients verify the broker with {files.ca_cert}")
    return 0


def _duty_check(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from alerts.coverage import check, holes, report
    from alerts.escalation import ChainFileError, load_chains
    from registry.loader import RegistryError, load_registry
    from rules.model import RuleFileError, builtin_pack, load_rules

    registry_path = args.registry or os.environ.get("JIAYUAN_REGISTRY")
    if not registry_path:
        print("jiayuan duty check: --registry DIR (or JIAYUAN_REGISTRY) is needed", file=sys.stderr)
        return 2
    chains_file = args.chains or os.environ.get("JIAYUAN_ESCALATION_FILE")
    try:
        reg = load_registry(Path(registry_path))
        chains = load_chains(Path(chains_file) if chains_file else None)
        rules = load_rules([builtin_pack()])
    except (RegistryError, ChainFileError, RuleFileError, OSError) as e:
        print(f"jiayuan duty check: {e}", file=sys.stderr)
        return 2
    lines = check(reg, chains, ZoneInfo(args.timezone), rules)
    found = holes(lines)
    total = len(lines)
    if args.holes_only:
        lines = [line for line in lines if line.holes]
    if lines:
        print(report(lines))
    if found:
        places = len({(line.chain_id, line.place) for line, _ in found})
        print(f"{len(found)} holes in {places} of {total} chain/place lines")
    else:
        print(f"no holes: someone would be paged first in all {total} chain/place lines")
    return 1 if found else 0


def _simulate(args: argparse.Namespace) -> int:
    from simulators.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jiayuan", description="Sensor ingestion and alerting for a residential community."
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service: ingest, rules, alerts, API, scheduler")
    run.set_defaults(func=_run)

    from simulators.cli import add_arguments

    sim = sub.add_parser("simulate", help="play device fleets and scenarios into the broker")
    add_arguments(sim)
    sim.set_defaults(func=_simulate)

    from jiayuan.auth.cli import add_arguments as add_staff_arguments

    staff = sub.add_parser("staff", help="staff sign-in: set a password, list who can sign in")
    add_staff_arguments(staff)  # its subcommands set func

    profiles = sub.add_parser("profiles", help="device profile files (vendor payloads)")
    psub = profiles.add_subparsers(dest="profiles_command", required=True)
    pcheck = psub.add_parser(
        "check", help="validate profile files (the shipped ones when none) and report every error"
    )
    pcheck.add_argument("files", nargs="*", type=Path)
    pcheck.set_defaults(func=_profiles_check)

    from jiayuan.push_cli import add_arguments as add_push_arguments

    push = sub.add_parser("push", help="tokens of the device platforms that push over HTTP")
    add_push_arguments(push)  # its subcommands set func

    rules = sub.add_parser("rules", help="rule files")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    check = rsub.add_parser("check", help="validate rule files and report every error")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(func=_rules_check)
    bt = rsub.add_parser(
        "backtest",
        help="replay the journal through rule files: what would have fired, per rule and day,"
        " beside the rules in force",
    )
    bt.add_argument("files", nargs="+", type=Path)
    bt.add_argument("--since", required=True, help="YYYY-MM-DD (local) or an ISO 8601 time")
    bt.add_argument("--until", required=True, help="YYYY-MM-DD (local, exclusive) or a time")
    bt.add_argument(
        "--data-dir", type=Path, help="the service's data directory (default $JIAYUAN_DATA_DIR)"
    )
    bt.add_argument("--warmup", default="6h", help="replayed before --since, not counted")
    bt.add_argument(
        "--jobs", type=int, help="processes (devices split by unit; default: the cores, ≤ 8)"
    )
    bt.set_defaults(func=_rules_backtest)

    broker = sub.add_parser("broker", help="the broker's accounts, ACL and TLS files")
    bsub = broker.add_subparsers(dest="broker_command", required=True)
    creds = bsub.add_parser(
        "credentials",
        help="accounts from the registry: Mosquitto's password and ACL files, and the secrets",
        description="Write passwords, acl, credentials.json, service.password, urgent.password"
        " into --out. Run again when the registry changes: passwords of remaining accounts are"
        " kept, removed devices lose their account; then reload Mosquitto (SIGHUP).",
    )
    creds.add_argument(
        "--registry",
        type=Path,
        required=True,
        help="registry directory or file; several communities: y=DIR,h=DIR (JIAYUAN_COMMUNITIES)",
    )
    creds.add_argument("--out", type=Path, required=True, metavar="DIR")
    creds.add_argument(
        "--community",
        default=os.environ.get("JIAYUAN_COMMUNITY", "y"),
        help="community id of the topics (default $JIAYUAN_COMMUNITY or y)",
    )
    creds.add_argument(
        "--gateways",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="an account per compound for its devices' gateway (default on)",
    )
    creds.add_argument(
        "--rotate",
        action="append",
        metavar="USERNAME",
        help="give this account a new password (repeatable)",
    )
    creds.add_argument(
        "--group",
        help="make passwords and acl readable by this group"
        " (the one Mosquitto runs as, e.g. mosquitto)",
    )
    creds.add_argument(
        "--profiles",
        metavar="FILES",
        help="device profile files, comma-separated (`shipped` for the shipped ones; empty for"
        " none): the service reads their topics, their bridges get accounts"
        " (default $JIAYUAN_PROFILES, else the shipped ones)",
    )
    creds.set_defaults(func=_broker_credentials)
    tls = bsub.add_parser(
        "tls",
        help="the installation's CA and the broker's TLS certificate",
        description="Make ca.crt/ca.key once, and server.crt/server.key when missing, stale"
        " or for other names.",
    )
    tls.add_argument("--out", type=Path, required=True, metavar="DIR")
    tls.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="the broker's host name or address as clients use it (repeatable;"
        " default 127.0.0.1 and localhost)",
    )
    tls.add_argument("--renew", action="store_true", help="make a new server certificate")
    tls.add_argument("--group", help="make server.key readable by this group (Mosquitto's)")
    tls.set_defaults(func=_broker_tls)

    duty = sub.add_parser("duty", help="the duty roster against the escalation chains")
    dsub = duty.add_subparsers(dest="duty_command", required=True)
    dcheck = dsub.add_parser(
        "check",
        help="who would be paged first, per chain and place, across the week; the holes",
        description="For every escalation chain and every building (and compound entrance for"
        " gates), who would be paged first at each half hour of the week (local time), and"
        " where nobody would be. Exit status 1 when there are holes.",
    )
    dcheck.add_argument("--registry", type=Path, help="registry (default $JIAYUAN_REGISTRY)")
    dcheck.add_argument("--chains", type=Path, help="escalation chains (default built in)")
    dcheck.add_argument(
        "--timezone",
        default=os.environ.get("JIAYUAN_TIMEZONE", "Asia/Shanghai"),
        help="local time of the roster (default $JIAYUAN_TIMEZONE or Asia/Shanghai)",
    )
    dcheck.add_argument("--holes-only", action="store_true", help="only lines with a hole")
    dcheck.set_defaults(func=_duty_check)

    registry = sub.add_parser("registry", help="registry files")
    gsub = registry.add_subparsers(dest="registry_command", required=True)
    gcheck = gsub.add_parser("check", help="validate a registry directory or file")
    gcheck.add_argument("path", type=Path)
    gcheck.set_defaults(func=_registry_check)
    gimport = gsub.add_parser(
        "import",
        help="show what spreadsheets (.xlsx, .csv) or YAML files would change; --apply writes it",
        description="The sections the files give (a CSV file names one, a workbook has a sheet"
        " per section) replace those of the registry in --registry; the others are kept. Prints"
        " the diff; with --apply, writes the registry files (a running service takes them on"
        " SIGHUP or POST /api/registry/reload).",
    )
    gimport.add_argument("files", nargs="+", type=Path, metavar="FILE")
    gimport.add_argument(
        "--registry", type=Path, help="registry directory (default $JIAYUAN_REGISTRY)"
    )
    gimport.add_argument(
        "--community",
        default=os.environ.get("JIAYUAN_COMMUNITY", "y"),
        help="community id (default $JIAYUAN_COMMUNITY or y)",
    )
    gimport.add_argument("--apply", action="store_true", help="write the registry files")
    gimport.set_defaults(func=_registry_import)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
