"""The ``jiayuan`` command: ``run``, ``simulate``, ``rules check``, ``registry check``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from jiayuan.api import create_app, make_server
    from jiayuan.service import Service
    from jiayuan.settings import Settings

    try:
        settings = Settings()
    except ValidationError as e:
        print(f"jiayuan: bad settings (JIAYUAN_* environment variables):\n{e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if settings.demo:
        logging.getLogger("jiayuan").warning(
            "demo mode (JIAYUAN_DEMO): weak secrets are accepted; never run it like this for real"
        )
    service = Service(settings)
    app = create_app(service.context)
    # uvicorn handles SIGINT/SIGTERM, shuts the API down, then raises the signal again with
    # the handlers it found: make those end the run through ``finally`` so the service stops
    # cleanly (batch committed and acknowledged, session kept) instead of dying mid-way.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    service.start()
    try:
        make_server(app, settings.http_host, settings.http_port).run()
    except SystemExit:
        pass
    finally:
        service.stop()
        logging.getLogger("jiayuan").info("jiayuan stopped")
    return 0


def _exit_cleanly(signum: int, _frame: object) -> None:
    # Once: a second Ctrl-C (a terminal sends one to every process of the group, and the demo
    # may follow with SIGTERM) must not break off the clean stop already under way.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(0)


def _rules_check(args: argparse.Namespace) -> int:
    from rules.check import main as check_main

    return check_main([str(p) for p in args.files])


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

    rules = sub.add_parser("rules", help="rule files")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    check = rsub.add_parser("check", help="validate rule files and report every error")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(func=_rules_check)

    registry = sub.add_parser("registry", help="registry files")
    gsub = registry.add_subparsers(dest="registry_command", required=True)
    gcheck = gsub.add_parser("check", help="validate a registry directory or file")
    gcheck.add_argument("path", type=Path)
    gcheck.set_defaults(func=_registry_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
