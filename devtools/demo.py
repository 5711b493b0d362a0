"""``make demo``: Mosquitto with the project's mosquitto.conf, ``jiayuan run`` on the embedded
defaults, and ``jiayuan simulate`` playing Y community's normal day with a few incidents.
``make demo COMMUNITIES=y,h`` (``--communities y,h``): a second community in the same
installation, its ids prefixed ``h-``, its own simulator, and a district manager (``dm-1``)
who sees both. ``make demo INSTANCES=2`` (``--instances 2``): a throwaway PostgreSQL
(devtools/postgres.py) and two ``jiayuan run`` on it, sharing the MQTT sessions (session slots)
and the rules' device partitions by lease, one console each (HTTP ports printed); stop one
with ``kill -9`` and the other takes its share over (docs/district.md). Ctrl-C stops
everything it started."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from base.datadir import DataDir
from devtools import children
from devtools.broker import Broker, free_port
from devtools.launch import ERROR_COUNTERS, ServiceProcess
from devtools.postgres import Postgres
from jiayuan.auth.demo_staff import banner as demo_staff_banner
from jiayuan.auth.demo_staff import seed as seed_demo_staff
from registry import Registry, Staff, load_registry, write_registry
from registry.communities import load_communities


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("data/demo"))
    ap.add_argument("--fresh", action="store_true", help="start from an empty data directory")
    ap.add_argument(
        "--incident-every",
        type=float,
        default=90.0,
        help="mean seconds between simulated incidents (default 90)",
    )
    ap.add_argument(
        "--communities",
        default="y",
        help="the communities to run, e.g. y,h (default y: one, as ever)",
    )
    ap.add_argument(
        "--instances",
        type=int,
        default=1,
        help="jiayuan run instances; above 1 they share a throwaway PostgreSQL (default 1)",
    )
    args, sim_args = ap.parse_known_args(argv)
    if not 1 <= args.instances <= 4:
        ap.error("--instances: 1 to 4")
    communities = [c.strip() for c in args.communities.split(",") if c.strip()]
    data: Path = args.data.resolve()
    if args.fresh and data.exists():
        import shutil

        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    registry = data / "registry"
    py = sys.executable

    # The staff's notification channels point at the local receiver (devtools/receiver.py).
    rx_port = 8025 if _port_free(8025) else free_port()
    notify = f"json://127.0.0.1:{rx_port}/notify"
    subprocess.run(
        [
            py,
            "-m",
            "jiayuan.cli",
            "simulate",
            "--write-registry",
            str(registry),
            "--notify",
            notify,
        ],
        check=True,
    )
    # more communities: each its own registry and simulator, its ids prefixed "<id>-"
    dirs = {communities[0]: registry} | {c: data / f"registry-{c}" for c in communities[1:]}
    for c in communities[1:]:
        subprocess.run(
            [py, "-m", "jiayuan.cli", "simulate", "--community", c, "--id-prefix", f"{c}-",
             "--write-registry", str(dirs[c]), "--notify", notify],
            check=True,
        )  # fmt: skip
    if len(communities) > 1:  # the district manager, in the second community's registry
        _add_district_manager(dirs[communities[1]], f"{notify}/dm-1")
    everyone: Registry = load_communities(dirs) if len(communities) > 1 else load_registry(registry)
    # Staff sign-in: demo passwords for a guard, a caretaker, a manager, an operator and an
    # admin, in the service's auth.db, and listed in data/demo/staff-logins.txt (0600).
    logins_file = data / "staff-logins.txt"
    postgres: Postgres | None = None
    database: dict[str, Any] = {}  # ServiceProcess settings
    if args.instances > 1:  # several instances: one PostgreSQL for all their state
        postgres = Postgres().start()
        database = {"database_url": postgres.create_database("jiayuan"), "instance_id": "demo-1"}
    logins = seed_demo_staff(
        database.get("database_url") or DataDir(data / "service").auth, everyone, logins_file
    )
    mqtt_port = 1883 if _port_free(1883) else free_port()
    tls_port = 8883 if _port_free(8883) else free_port()
    http_port = 8080 if _port_free(8080) else free_port()
    notifications = data / "notifications.log"
    receiver = subprocess.Popen(
        [py, "-m", "devtools.receiver", "--port", str(rx_port), "--log", str(notifications)],
        stdout=subprocess.DEVNULL,
    )
    # The installation's CA and the broker's certificate, and accounts for every device, every
    # compound's gateway and the service's two sessions, from the registry (kept across runs:
    # regenerated, passwords stay): data/demo/broker/.
    broker = Broker(
        data / "mosquitto",
        mqtt_port,
        tls_port=tls_port,
        registry=everyone,
        auth_dir=data / "broker",
    ).start()
    svc: ServiceProcess | None = None
    more_svcs: list[ServiceProcess] = []
    sim: subprocess.Popen[bytes] | None = None
    others: list[subprocess.Popen[bytes]] = []
    where: dict[str, Any] = (
        {"registry": registry}
        if len(communities) == 1
        else {"communities": ",".join(f"{c}={d}" for c, d in dirs.items())}
    )
    interrupted = False
    try:
        svc = ServiceProcess(  # over TLS, with the service's account
            data / "service",
            broker,
            http_port,
            log=data / "service.log",
            **where,
            **database,
            broker_accounts_dir=broker.auth_dir,  # devices added through the API can connect
            broker_pid_file=broker.pid_file,
            demo=True,
            expect_errors=ERROR_COUNTERS,  # a demo's errors are in its log; they fail nothing
        ).start()
        for n in range(2, args.instances + 1):  # the same installation, another instance
            more_svcs.append(
                ServiceProcess(
                    data / f"service-{n}",
                    broker,
                    free_port(),
                    log=data / f"service-{n}.log",
                    **where,
                    **(database | {"instance_id": f"demo-{n}"}),
                    demo=True,
                    expect_errors=ERROR_COUNTERS,
                ).start()
            )
        sim_env = dict(os.environ, JIAYUAN_MQTT_HOST="127.0.0.1")
        sim_cmd = [
            py,
            "-m",
            "jiayuan.cli",
            "simulate",
            "--incident-every",
            str(args.incident_every),
            "--port",
            str(tls_port),
            "--tls-ca",
            str(broker.ca_file),
            "--credentials",
            str(broker.auth_dir / "credentials.json"),
        ]
        # over TLS, one connection per compound's gateway account
        first = ["--community", communities[0]] if len(communities) > 1 else []
        sim = subprocess.Popen([*sim_cmd, *first, *sim_args], env=sim_env)
        for n, c in enumerate(communities[1:], start=2):  # another day: its own seed
            more_args = ["--community", c, "--id-prefix", f"{c}-", "--seed", str(n), "--quiet"]
            others.append(subprocess.Popen([*sim_cmd, *more_args, *sim_args], env=sim_env))
        more = (
            f"  and {len(communities) - 1} more communit{'y' if len(communities) == 2 else 'ies'}"
            f" ({', '.join(communities[1:])}: ids prefixed), each with its simulator;\n"
            "  the district manager dm-1 sees them all, everyone else their own.\n"
            if len(communities) > 1
            else ""
        )
        if postgres is not None:
            more += (
                f"  {args.instances} instances of one installation on a throwaway PostgreSQL"
                f" ({postgres.url('jiayuan')});\n  each holds a share of the MQTT session slots"
                " and device partitions; consoles also at\n"
                + "".join(f"  {s.url}/ (instance {n}, log {s.log})\n"
                          for n, s in enumerate(more_svcs, start=2))
            )  # fmt: skip
        url = svc.url
        print(
            "\n"
            "  jiayuan demo is running — Y community: 3,109 smoke detectors, 1,221 wearables,\n"
            "  53 gates, playing a normal day with an incident every ~"
            f"{args.incident_every:.0f} s.\n" + more + "\n"
            f"  Staff console   {url}/\n"
            + demo_staff_banner(logins, svc.token, url, logins_file)
            + f"  API docs        {url}/docs\n"
            f"  Open alerts     {url}/api/alerts?status=firing\n"
            f"  Live stream     {url}/api/stream\n"
            f"  Metrics         {url}/metrics\n"
            f"  Health          {url}/healthz\n"
            f"  MQTT broker     127.0.0.1:{tls_port} TLS, 127.0.0.1:{mqtt_port} plain (loopback,\n"
            "                  development); no anonymous clients (mosquitto.conf)\n"
            f"  Broker files    {broker.auth_dir}: ca.crt (clients verify the broker with\n"
            "                  it), passwords + acl (Mosquitto's), credentials.json (0600: every\n"
            "                  device's, gateway's and the service's two accounts' passwords:\n"
            "                  jiayuan.service for telemetry, jiayuan.urgent for events); the\n"
            "                  simulator publishes through one gateway account per compound\n"
            f"  Service log     {data / 'service.log'}\n"
            f"  Notifications   http://127.0.0.1:{rx_port}/  (what staff receive, one line\n"
            f"                  each in {notifications}): a fall goes to the\n"
            "                  resident's caretaker, then higher up every 3 min until someone\n"
            "                  acknowledges it; a fire to security and the building's caretakers\n"
            f"  Data            {data}\n\n"
            "  Ctrl-C stops the simulator, the service, the broker and the receiver.\n",
            flush=True,
        )
        while True:
            if svc.proc is None or svc.proc.poll() is not None:
                print(
                    f"jiayuan run stopped unexpectedly; see {data / 'service.log'}", file=sys.stderr
                )
                return 1
            if sim.poll() is not None:
                print("simulator finished; the service keeps running (Ctrl-C to stop)")
                sim = None
                while svc.proc is not None and svc.proc.poll() is None:
                    time.sleep(1)
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        # Ctrl-C reached every process of the terminal's group: give each a moment to stop on
        # its own before asking again.
        print("\nstopping…", flush=True)
        interrupted = True
        return 0
    finally:
        for other in others:
            children.stop(other, grace=10.0 if interrupted else 0.0, timeout=15)
        if sim is not None:
            children.stop(sim, grace=10.0 if interrupted else 0.0, timeout=15)
        for other_svc in more_svcs:
            other_svc.stop(grace=20.0 if interrupted else 0.0)
        if svc is not None:
            svc.stop(grace=20.0 if interrupted else 0.0)
        broker.stop()
        if postgres is not None:
            postgres.stop()
        children.stop(receiver, timeout=15)
        print("demo stopped: simulator, service, broker and receiver", flush=True)


def _add_district_manager(directory: Path, channel: str) -> None:
    """``dm-1``, a district manager (sees every community), into the registry in ``directory``."""
    reg = load_registry(directory)
    if "dm-1" not in reg.staff:
        reg.staff["dm-1"] = Staff(
            staff_id="dm-1", name="District manager", role="district_manager", channels=(channel,)
        )
        write_registry(reg, directory)


if __name__ == "__main__":
    sys.exit(main())
