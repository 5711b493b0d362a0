"""Run Mosquitto with the project's ``mosquitto.conf`` for the demo, the tests and the benchmark.

Only these change from the file: the two listeners' ports (both on loopback; tests take free
ones), the persistence folder, and the folder of the password, ACL and TLS files (under the
run's own data directory). Everything else — accounts and ACL, TLS, queue sizes, in-flight
window, persistence — is exactly what operators deploy.

Before starting, :class:`Broker` makes the installation's CA and the broker's certificate
(jiayuan/broker/tls.py) and the accounts for its registry (jiayuan/broker/accounts.py), and
hands out :class:`ingest.access.BrokerAccess` for them. Test-only accounts (``test.<name>``,
read and write anything) are added on demand for tests and the benchmark.
"""

from __future__ import annotations

import argparse
import getpass
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devtools import children
from ingest.access import BrokerAccess, CredentialsFile
from jiayuan.broker import accounts as brokerauth
from jiayuan.broker.tls import CA_CERT, make_tls
from registry import Registry
from registry.loader import load_registry

PROJECT_CONF = Path(__file__).resolve().parent.parent / "mosquitto.conf"
CONF_DIR = "/etc/mosquitto/jiayuan/"
"""Where the deployed mosquitto.conf expects the generated files."""


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError("mosquitto not found: install Debian's mosquitto package")


PORTS_BELOW_EPHEMERAL = 12_000
"""How many ports below the kernel's ephemeral range :func:`free_port` hands out."""
_next_port: dict[range, int] = {}


def _port_range() -> range:
    """Where :func:`free_port` looks: the ports just below the kernel's ephemeral range (which
    no outgoing connection takes as its own), and under pytest-xdist this worker's share of
    them (``PYTEST_XDIST_WORKER`` ``gwN`` of ``PYTEST_XDIST_WORKER_COUNT``)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    start = max(1024, low - PORTS_BELOW_EPHEMERAL)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not (worker.startswith("gw") and worker[2:].isdigit()) or count < 1:
        return range(start, low)
    share = (low - start) // count
    first = start + int(worker[2:]) % count * share
    return range(first, first + share)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port in TIME_WAIT is skipped too
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nobody uses now, for a child process to listen on soon after.

    Parallel test workers and the connections they open must not take it in between: it comes
    from below the ephemeral range, from this worker's own share (:func:`_port_range`), and a
    process hands out the ports of its share in turn (from a random start), so not the same one
    twice in a row. Another program on the machine (a second test run, say) may still bind it
    first: the starters (Broker, Victoria, Postgres, ServiceProcess) then pick again
    (:func:`devtools.children.start_listening`)."""
    ports = _port_range()
    if len(ports) < 16:  # an ephemeral range starting very low: the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    at = _next_port.get(ports)
    if at is None:
        at = random.randrange(len(ports))
    for i in range(len(ports)):
        port = ports[(at + i) % len(ports)]
        if _bindable(port):
            _next_port[ports] = (at + i + 1) % len(ports)
            return port
    raise OSError(f"no free port in {ports.start}-{ports.stop - 1}")


def _sub(pattern: str, repl: str, text: str, what: str) -> str:
    text, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    if n == 0:
        raise ValueError(f"mosquitto.conf: no {what} to change")
    return text


def render_conf(
    port: int,
    data_dir: Path,
    source: Path = PROJECT_CONF,
    *,
    tls_port: int,
    auth_dir: Path,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """``overrides``: options to set instead of the file's (the line replaced, or added)."""
    text = source.read_text()
    for key, value in (overrides or {}).items():
        text, n = re.subn(rf"^{re.escape(key)} .*$", f"{key} {value}", text, flags=re.MULTILINE)
        if n == 0:
            text += f"\n{key} {value}\n"
    text = _sub(
        r"^listener 1883 127\.0\.0\.1$",
        f"listener {port} 127.0.0.1",
        text,
        "'listener 1883 127.0.0.1' line",
    )
    text = _sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", text, "'listener 8883' line")
    text = _sub(
        r"^persistence_location .*$",
        f"persistence_location {data_dir}/",
        text,
        "persistence_location",
    )
    text = _sub(rf"^(\w+) {re.escape(CONF_DIR)}", rf"\1 {auth_dir}/", text, f"{CONF_DIR} path")
    return text + f"\nuser {getpass.getuser()}\n"


def try_connect(host: str, port: int, access: BrokerAccess, timeout: float = 5.0) -> str:
    """Connect once and say how the broker answered: ``Success``, a refusal reason such as
    ``Not authorized``, or the error that stopped the connection (a TLS failure, say)."""
    answered = threading.Event()
    result: list[str] = []
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"probe-{os.getpid()}",
        protocol=mqtt.MQTTv5,
    )
    c.reconnect_delay_set(min_delay=60, max_delay=60)  # one attempt: no retry within timeout

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        result.append(str(rc))
        answered.set()

    c.on_connect = on_connect
    try:
        access.apply(c)
        c.connect(host, port, keepalive=10)
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    c.loop_start()
    try:
        if not answered.wait(timeout):
            return "no CONNACK"
        return result[0]
    finally:
        c.disconnect()
        c.loop_stop()


class Broker:
    """A Mosquitto process: a TLS listener on 127.0.0.1:``tls_port`` and the plain development
    listener on 127.0.0.1:``port``, accounts for ``registry`` (none: only the service's).
    ``stop()`` shuts it down cleanly (state saved)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        tls_port: int | None = None,
        registry: Registry | Path | None = None,
        auth_dir: Path | None = None,
        test_accounts: Iterable[str] = (),
        conf: Mapping[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls_port = tls_port or free_port()
        self._picked = port is None and tls_port is None
        """Ports chosen here, which its first start may change if another process took one."""
        self.data_dir = data_dir
        self.auth_dir = auth_dir or data_dir / "auth"
        """The generated files: passwords, acl, credentials.json, CA and certificate."""
        self.registry = load_registry(registry) if isinstance(registry, Path) else registry
        self._tests = set(test_accounts)
        self.conf = dict(conf or {})
        """Options of mosquitto.conf set otherwise for this broker (benchmarks)."""
        self._creds: CredentialsFile | None = None
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ accounts and files

    @property
    def ca_file(self) -> Path:
        return self.auth_dir / CA_CERT

    @property
    def credentials(self) -> CredentialsFile:
        if self._creds is None:
            self.provision()
        assert self._creds is not None
        return self._creds

    def provision(self, registry: Registry | None = None) -> brokerauth.Report:
        """Write the CA, certificate and accounts (for ``registry`` if given, which then
        replaces the broker's); a running broker reloads them (SIGHUP) before this returns."""
        if registry is not None:
            self.registry = registry
        reg = self.registry or Registry()
        if self._creds is None:  # once per Broker: the CA and certificate outlive reloads
            make_tls(self.auth_dir)
        report = brokerauth.write_credentials(reg, self.auth_dir, tests=self._tests)
        old, self._creds = self._creds, CredentialsFile.load(self.auth_dir / brokerauth.CREDENTIALS)
        if self.proc is not None and old is not None:
            self._reload(old, report)
        return report

    def _reload(self, old: CredentialsFile, report: brokerauth.Report) -> None:
        """SIGHUP, then wait until the broker answers with the new accounts."""
        assert self.proc is not None and self._creds is not None
        self.proc.send_signal(signal.SIGHUP)
        checks: list[tuple[BrokerAccess, bool]] = []
        if report.added:
            checks.append((self.access(report.added[0]), True))
        if report.removed:
            u = report.removed[0]
            checks.append((BrokerAccess(u, old.password_of(u)), False))
        deadline = time.monotonic() + 10
        for access, ok in checks:
            while (try_connect(self.host, self.port, access) == "Success") != ok:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mosquitto did not reload its accounts ({report})")
                time.sleep(0.05)

    def reload(self) -> CredentialsFile:
        """Read the accounts again after someone else wrote them (the service, whose
        ``JIAYUAN_BROKER_ACCOUNTS_DIR`` is :attr:`auth_dir`): :meth:`access` then answers with
        them. That writer reloads the broker itself (:attr:`pid_file`). Its registry is not
        this broker's: :meth:`provision` would write this one's again."""
        self._creds = CredentialsFile.load(self.auth_dir / brokerauth.CREDENTIALS)
        return self._creds

    @property
    def pid_file(self) -> Path:
        """Where the running broker's pid is written, for ``JIAYUAN_BROKER_PID_FILE``."""
        return self.data_dir / "mosquitto.pid"

    def access(self, username: str, *, tls: bool = False) -> BrokerAccess:
        """The account ``username`` (plain loopback listener, or the TLS one with ``tls``)."""
        password = self.credentials.password_of(username)
        if password is None:
            raise KeyError(f"no broker account {username!r}")
        return BrokerAccess(username, password, tls=tls, ca_file=self.ca_file if tls else None)

    def service_access(self, *, tls: bool = True) -> BrokerAccess:
        """The service's account: its telemetry session's."""
        return self.access(brokerauth.SERVICE_USER, tls=tls)

    def urgent_access(self, *, tls: bool = True) -> BrokerAccess:
        """The service's second account: its urgent session's (events, status)."""
        return self.access(brokerauth.URGENT_USER, tls=tls)

    def device_access(self, device_id: str, *, tls: bool = False) -> BrokerAccess:
        return self.access(device_id, tls=tls)

    def test_access(self, name: str = "test", *, tls: bool = False) -> BrokerAccess:
        """A test-only account ``test.<name>`` that may read and write any topic; made (and the
        broker reloaded) the first time it is asked for."""
        with self._lock:
            if name not in self._tests:
                self._tests.add(name)
                self.provision()
        return self.access(f"{brokerauth.TEST_PREFIX}{name}", tls=tls)

    def port_for(self, access: BrokerAccess) -> int:
        return self.tls_port if access.tls else self.port

    def password_file(self, username: str) -> Path:
        """A 0600 file holding ``username``'s password, for ``--password-file`` options."""
        path = self.auth_dir / f"{username}.password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.access(username).password}\n")
        return path

    def service_env(self, *, tls: bool = True) -> dict[str, str]:
        """``JIAYUAN_MQTT_*`` for ``jiayuan run`` to connect with the service's two accounts."""
        env = {
            "JIAYUAN_MQTT_HOST": self.host,
            "JIAYUAN_MQTT_PORT": str(self.tls_port if tls else self.port),
            "JIAYUAN_MQTT_USERNAME": self.service_access().username or "",
            "JIAYUAN_MQTT_PASSWORD_FILE": str(self.auth_dir / brokerauth.SERVICE_PASSWORD),
            "JIAYUAN_MQTT_URGENT_USERNAME": brokerauth.URGENT_USER,
            "JIAYUAN_MQTT_URGENT_PASSWORD_FILE": str(self.auth_dir / brokerauth.URGENT_PASSWORD),
        }
        if tls:
            env["JIAYUAN_MQTT_TLS_CA"] = str(self.ca_file)
        return env

    # ------------------------------------------------------------------ process

    def start(self, timeout: float = 10.0) -> Broker:
        if self._creds is None:
            self.provision()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        log = self.data_dir / "mosquitto.log"

        def start() -> None:
            conf.write_text(
                render_conf(
                    self.port,
                    self.data_dir,
                    tls_port=self.tls_port,
                    auth_dir=self.auth_dir,
                    overrides=self.conf,
                )
            )
            # in a process group of its own: a terminal's Ctrl-C (the demo) reaches the service
            # and the simulators, which stop and disconnect, and not the broker, stopped after
            self.proc = children.spawn([find_mosquitto(), "-c", str(conf)], log, process_group=True)
            # Mosquitto opens every listener before it serves any: the plain one answering means
            # the TLS one is there too (probing that one would log a failed handshake).
            children.wait_ready(
                self.proc, self._listening, name="mosquitto", log=log, timeout=timeout
            )

        def repick() -> None:
            self.port, self.tls_port = free_port(), free_port()

        children.start_listening(start, log, repick if self._picked else None)
        self._picked = False  # clients know these ports now: a restart keeps them
        assert self.proc is not None
        self.pid_file.write_text(f"{self.proc.pid}\n")
        return self

    def _listening(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=0.2):
            return True

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            children.stop(self.proc, kill=kill)
            self.proc = None
            self.pid_file.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run Mosquitto with the project's mosquitto.conf")
    p.add_argument("--port", type=int, default=1883, help="plain loopback listener")
    p.add_argument("--tls-port", type=int, default=8883, help="TLS listener (on loopback here)")
    p.add_argument("--data", type=Path, default=Path("data/mosquitto"))
    p.add_argument("--registry", type=Path, help="make accounts for this registry")
    args = p.parse_args(argv)
    broker = Broker(
        args.data.resolve(), args.port, tls_port=args.tls_port, registry=args.registry
    ).start()
    print(
        f"mosquitto on {broker.host}:{broker.tls_port} (TLS, CA {broker.ca_file}) and"
        f" {broker.host}:{broker.port} (plain); accounts in {broker.auth_dir}"
        f" (credentials.json); data in {broker.data_dir}",
        flush=True,
    )
    return children.serve(broker.proc, broker.stop)


if __name__ == "__main__":
    sys.exit(main())
