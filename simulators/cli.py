"""``jiayuan simulate``: play the simulated community into the broker.

- default: the fleet's normal day, with incidents sprinkled in, until Ctrl-C or ``--duration``
- ``--scenario NAME`` (repeatable): only those scenarios, together from now, then exit
- ``--write-registry DIR``: write the registry the service should load, and exit (``--play``:
  then play)
- load: ``--rate N`` messages per second (the day runs as fast as needed for that, unless
  ``--speed`` says otherwise), ``--devices N``, ``--duration S``
- broker access: ``--credentials FILE`` (one connection per gateway account), or
  ``--username`` with ``--password-file``; ``--tls-ca FILE`` for the TLS listener
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType

from ingest.access import BrokerAccess, CredentialsFile, read_secret
from simulators.behaviour import TZ
from simulators.fleet import NOTIFY, build_fleet
from simulators.player import DayPlayer, Incidents, natural_speed, play_scenarios
from simulators.prefix import prefixed
from simulators.progress import Progress
from simulators.publisher import Publisher
from simulators.scenarios import SCENARIOS

log = logging.getLogger("simulators")


def _positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _incidents(text: str) -> list[str]:
    if text == "on":
        return list(SCENARIOS)
    if text == "off":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario {', '.join(unknown)}")
    return names


def _clock_time(text: str) -> int:
    try:
        t = datetime.strptime(text, "%H:%M")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HH:MM, got {text!r}") from None
    return t.hour * 3600 + t.minute * 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``jiayuan simulate``."""
    env_port = os.environ.get("JIAYUAN_MQTT_PORT")
    broker = parser.add_argument_group("broker")
    broker.add_argument(
        "--host",
        default=os.environ.get("JIAYUAN_MQTT_HOST", "127.0.0.1"),
        help="MQTT broker (default $JIAYUAN_MQTT_HOST or 127.0.0.1)",
    )
    broker.add_argument(
        "--port",
        type=int,
        default=int(env_port) if env_port else None,
        help="default $JIAYUAN_MQTT_PORT, or 8883 with --tls-ca and 1883 without",
    )
    env_ca, env_pw = (
        os.environ.get("JIAYUAN_MQTT_TLS_CA"),
        os.environ.get("JIAYUAN_MQTT_PASSWORD_FILE"),
    )
    broker.add_argument(
        "--tls-ca",
        type=Path,
        default=Path(env_ca) if env_ca else None,
        metavar="FILE",
        help="connect over TLS, verifying the broker against this CA (the installation's"
        " ca.crt; default $JIAYUAN_MQTT_TLS_CA)",
    )
    broker.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        help="credentials.json of `jiayuan broker credentials`: publish through its gateway"
        " accounts, one connection each, every device through its compound's gateway",
    )
    broker.add_argument(
        "--username",
        default=os.environ.get("JIAYUAN_MQTT_USERNAME"),
        help="instead: one account for every message (default $JIAYUAN_MQTT_USERNAME)",
    )
    broker.add_argument(
        "--password-file",
        type=Path,
        default=Path(env_pw) if env_pw else None,
        metavar="FILE",
        help="its password, first line (default $JIAYUAN_MQTT_PASSWORD_FILE, else"
        " $JIAYUAN_MQTT_PASSWORD)",
    )
    broker.add_argument(
        "--clients",
        type=_positive(int),
        default=1,
        help="MQTT connections to publish through (default 1)",
    )
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument(
        "--community",
        default=os.environ.get("JIAYUAN_COMMUNITY", "y"),
        help="community id in topics and registry (default $JIAYUAN_COMMUNITY or y)",
    )
    fleet.add_argument("--seed", type=int, default=1, help="behaviour seed (default 1)")
    fleet.add_argument(
        "--id-prefix",
        default="",
        metavar="P",
        help="put P before every id (devices, residents, staff, buildings, compounds): a second"
        " community in the same installation, whose ids must differ from the first's",
    )
    fleet.add_argument(
        "--devices",
        type=_positive(int),
        metavar="N",
        help="play N devices: a spread subset of the community, or more",
    )
    fleet.add_argument(
        "--notify",
        default=NOTIFY,
        metavar="URL",
        help=f"staff channels in the registry: URL/<staff id> (default {NOTIFY})",
    )
    fleet.add_argument(
        "--write-registry",
        type=Path,
        metavar="DIR",
        help="write the fleet's registry (YAML) into DIR and exit",
    )
    fleet.add_argument("--play", action="store_true", help="after --write-registry, play")
    play = parser.add_argument_group("play")
    play.add_argument(
        "--rate",
        type=_positive(float),
        metavar="N",
        help="at most N messages/s; sets the speed unless --speed is given",
    )
    play.add_argument(
        "--duration",
        type=_positive(float),
        metavar="S",
        help="stop after S seconds (default: run until Ctrl-C)",
    )
    play.add_argument(
        "--speed",
        type=_positive(float),
        help="simulated seconds per wall second of the day (default 1)",
    )
    play.add_argument(
        "--day-start",
        type=_clock_time,
        metavar="HH:MM",
        help="simulated local time to start the day at (default now)",
    )
    play.add_argument(
        "--incidents",
        type=_incidents,
        default=list(SCENARIOS),
        metavar="on|off|NAME,...",
        help="incidents in the day (default on)",
    )
    play.add_argument(
        "--incident-every",
        type=_positive(float),
        default=300.0,
        metavar="S",
        help="mean seconds between incidents (default 300)",
    )
    play.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help="play only this scenario (repeatable); see --list-scenarios",
    )
    play.add_argument("--list-scenarios", action="store_true", help="list scenarios and exit")
    play.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    """Run ``jiayuan simulate``; 0 when done or stopped with Ctrl-C, 1 without a broker."""
    if args.list_scenarios:
        for name, spec in SCENARIOS.items():
            print(f"{name:18} {spec.help}")
        return 0
    fleet = prefixed(
        build_fleet(args.seed, devices=args.devices, community=args.community, notify=args.notify),
        args.id_prefix,
    )
    if args.write_registry is not None:
        fleet.write(args.write_registry)
        r = fleet.registry
        print(
            f"wrote {len(r.devices):,} devices, {len(r.residents):,} residents, "
            f"{len(r.staff)} staff, {len(r.buildings)} buildings to {args.write_registry}"
        )
        if not args.play:
            return 0
    speed = args.speed or (natural_speed(fleet, args.rate) if args.rate else 1.0)
    try:
        publisher = _publisher(args, set(fleet.sims))
    except (OSError, ValueError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2
    try:
        publisher.start()
    except ConnectionError as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        publisher.stop(flush_timeout=0)
        return 0
    progress = Progress(publisher.stats, sys.stderr)
    _logging(progress)
    if not args.quiet:
        progress.start()
    stop = threading.Event()
    timer = threading.Timer(args.duration, stop.set) if args.duration else None
    # SIGTERM stops the run like Ctrl-C (only the main thread can take signals).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        if args.scenario:
            if timer is not None:
                timer.start()
            play_scenarios(fleet, publisher, args.scenario, stop=stop)
        else:
            n = len(fleet.sims)
            log.info(
                "playing %d devices of community %s at speed %g (about %.0f msg/s) to %s:%d",
                n,
                fleet.community,
                speed,
                fleet.natural_rate() * speed,
                args.host,
                args.port,
            )
            incidents = Incidents(args.incidents, args.incident_every) if args.incidents else None
            DayPlayer(fleet, publisher, speed, _sim_start(args.day_start), incidents, stop).run(
                args.duration
            )
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
        progress.stop()
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C skips the flush
            publisher.stop(flush_timeout=5.0)
        print(f"simulate: {publisher.summary()}", file=sys.stderr)
        if main:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _publisher(args: argparse.Namespace, devices: set[str]) -> Publisher:
    """The publisher for the broker options: gateway accounts, one account, or none."""
    tls = args.tls_ca is not None
    if args.port is None:
        args.port = 8883 if tls else 1883

    def access(user: str | None, password: str | None) -> BrokerAccess:
        return BrokerAccess(user, password, tls=tls, ca_file=args.tls_ca)

    if args.credentials is not None:
        creds = CredentialsFile.load(args.credentials)
        gateways = [
            (access(name, g.password), g.devices)
            for name, g in creds.gateways.items()
            if devices.intersection(g.devices)
        ]
        covered = {d for _, devs in gateways for d in devs}
        if devices - covered:
            missing = sorted(devices - covered)
            raise ValueError(
                f"{args.credentials}: no gateway account for {len(missing)} of the fleet's"
                f" devices (e.g. {missing[0]}): generate it from this fleet's registry"
            )
        return Publisher(args.host, args.port, rate=args.rate, gateways=gateways)
    password = os.environ.get("JIAYUAN_MQTT_PASSWORD") or None
    if args.password_file is not None:
        password = read_secret(args.password_file)
    if args.username is not None and password is None:
        raise ValueError("--username needs --password-file (or $JIAYUAN_MQTT_PASSWORD)")
    if args.username is not None and args.clients > 1:
        raise ValueError(
            "--clients: the broker gives each account one connection (client id = username);"
            " use --credentials for one connection per gateway"
        )
    return Publisher(
        args.host,
        args.port,
        clients=args.clients,
        rate=args.rate,
        access=access(args.username, password),
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _sim_start(seconds_of_day: int | None) -> float | None:
    if seconds_of_day is None:
        return None
    today = datetime.now(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return today.timestamp() + seconds_of_day


def _logging(progress: Progress) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = progress.handler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.getLogger("paho").setLevel(logging.WARNING)
