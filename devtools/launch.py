"""Start ``jiayuan run`` as a child process: for the demo, the benchmark and the integration
tests, which all need the real service, not an imitation.

An error the service only logged or counted fails the test that ran it: :meth:`ServiceProcess.stop`
reads ``/metrics`` first and raises :class:`UnexpectedErrors` when one of :data:`ERROR_COUNTERS`
is above zero and the test did not declare it (``expect_errors``). tests/conftest.py checks the
same counters around every test, for the parts that tests build in their own process."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devtools import children
from devtools.broker import Broker, free_port

ERROR_COUNTERS = frozenset(
    {
        "jiayuan_log_errors_total",  # every log.error and log.exception, by logger
        "jiayuan_ingest_errors_total",  # PIPELINE_ERRORS, by stage
        "jiayuan_alert_subscriber_errors_total",  # SUBSCRIBER_ERRORS
        "jiayuan_rule_errors_total",  # RuleEngine.errors, by rule
        "jiayuan_rules_commit_failures_total",  # the alert store refused the rules worker
        "jiayuan_journal_write_failures_total",  # the journal could not write
        "jiayuan_journal_refused_total",  # ... and kept messages as dead letters
        "jiayuan_influx_write_errors_total",  # InfluxDB refused or was unreachable
        "jiayuan_influx_points_rejected_total",  # ... and set points aside for good
    }
)
"""The counters of errors: above zero only when something failed (a bug, or a broken disk,
store or server that a test brings about on purpose and declares)."""

Sample = tuple[str, Mapping[str, str], float]
"""A counter's sample: name (``..._total``), labels, value."""


class UnexpectedErrors(AssertionError):
    """Errors counted that the test did not declare in ``expect_errors``."""


def error_samples(samples: Iterable[Sample]) -> dict[str, float]:
    """The samples of :data:`ERROR_COUNTERS` above zero, as ``name{label="value"}``: value."""
    return {_key(name, labels): v for name, labels, v in samples if name in ERROR_COUNTERS and v}


def unexpected(errors: Mapping[str, float], expected: Collection[str]) -> dict[str, float]:
    """``errors`` (from :func:`error_samples`) that no entry of ``expected`` covers. An entry
    is a counter's name (any labels) or a name with some labels, ``'name{logger="x"}'``."""
    return {k: v for k, v in errors.items() if not any(_covers(e, k) for e in expected)}


def _key(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


_LABEL = re.compile(r'(\w+)="([^"]*)"')
_SPEC = re.compile(r'(\w+)(?:\{(\w+="[^"]*"(?:,\w+="[^"]*")*)\})?')


def _covers(spec: str, key: str) -> bool:
    m = _SPEC.fullmatch(spec.replace(" ", ""))
    if m is None:
        raise ValueError(f'expect_errors: {spec!r} is not name or name{{label="value",...}}')
    if key.partition("{")[0] != m[1]:
        return False
    have = dict(_LABEL.findall(key.partition("{")[2]))
    return all(have.get(k) == v for k, v in _LABEL.findall(m[2] or ""))


class ServiceProcess:
    """``jiayuan run`` on 127.0.0.1 with the given settings (``JIAYUAN_*`` without prefix).

    ``mqtt``: a :class:`Broker`, reached with the service's account over its TLS listener (its
    plain loopback one with ``tls=False``); or a port on 127.0.0.1, the account then coming
    from the environment (``JIAYUAN_MQTT_*``).

    ``expect_errors``: the error counters this run may move (see :func:`unexpected`); any
    other one above zero makes :meth:`stop` raise :class:`UnexpectedErrors`."""

    def __init__(
        self,
        data_dir: Path,
        mqtt: int | Broker,
        http_port: int | None = None,
        *,
        log: Path | None = None,
        tls: bool = True,
        expect_errors: Collection[str] = (),
        process_group: bool = False,
        **settings: Any,
    ) -> None:
        self.data_dir = data_dir
        self.http_port = http_port or free_port()
        self._picked = http_port is None
        """A port chosen here, which its first start may change if another process took it."""
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = log or data_dir / "service.log"
        self.expect_errors = expect_errors
        self.process_group = process_group
        """In a process group of its own (with its ingest processes): ``os.killpg``."""
        env = dict(os.environ)
        if isinstance(mqtt, Broker):
            env.update(mqtt.service_env(tls=tls))
        else:
            env.update(JIAYUAN_MQTT_HOST="127.0.0.1", JIAYUAN_MQTT_PORT=str(mqtt))
        env.update(
            JIAYUAN_HTTP_HOST="127.0.0.1",
            JIAYUAN_HTTP_PORT=str(self.http_port),
            JIAYUAN_DATA_DIR=str(data_dir),
        )
        env.update({f"JIAYUAN_{k.upper()}": str(v) for k, v in settings.items()})
        # staff access: requests below carry this admin token unless given another one
        env.setdefault("JIAYUAN_ADMIN_TOKEN", secrets.token_urlsafe(32))
        self.token: str = env["JIAYUAN_ADMIN_TOKEN"]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)

        def start() -> None:
            self.proc = children.spawn(
                [sys.executable, "-m", "jiayuan.cli", "run"],
                self.log,
                self.env,
                process_group=self.process_group,
            )
            children.wait_ready(
                self.proc,
                self.ready,
                name="jiayuan run",
                log=self.log,
                timeout=timeout,
                interval=0.1,
            )

        def repick() -> None:
            self.http_port = free_port()
            self.url = f"http://127.0.0.1:{self.http_port}"
            self.env["JIAYUAN_HTTP_PORT"] = str(self.http_port)

        children.start_listening(start, self.log, repick if self._picked else None)
        self._picked = False  # its URL is known now: starting it again keeps the port
        return self

    def ready(self) -> bool:
        """Whether it answers and its MQTT session is up (not yet, while it does not answer)."""
        try:
            return bool(self.health().get("mqtt_connected"))
        except httpx.HTTPError:
            return False

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/healthz", ok_statuses=(200, 503))
        return body

    def request(
        self, method: str, path: str, *, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        """One request with a bearer token (the admin token unless ``token``), on a connection
        of its own (the HTTP limits tests count connections)."""
        headers = {"Authorization": f"Bearer {token or self.token}", **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def get(
        self, path: str, ok_statuses: tuple[int, ...] = (200,), *, token: str | None = None
    ) -> Any:
        """GET JSON; raises httpx.HTTPStatusError unless the status is one of ``ok_statuses``."""
        r = self.request("GET", path, token=token)
        if r.status_code not in ok_statuses:
            r.raise_for_status()  # the 2xx pass
        return r.json()

    def get_text(self, path: str, *, token: str | None = None) -> str:
        r = self.request("GET", path, token=token).raise_for_status()
        return r.text

    def post(self, path: str, body: dict[str, Any], *, token: str | None = None) -> tuple[int, Any]:
        r = self.request("POST", path, token=token, json=body)
        return r.status_code, r.json()

    def errors(self) -> dict[str, float]:
        """The error counters above zero in ``/metrics`` (see :func:`error_samples`)."""
        families = text_string_to_metric_families(self.get_text("/metrics"))
        return error_samples((s.name, s.labels, s.value) for f in families for s in f.samples)

    def token_for(self, staff_id: str, days: int = 1) -> str:
        """A bearer token of ``staff_id`` (minted by the admin token through the API)."""
        code, body = self.post(
            "/api/auth/tokens", {"staff_id": staff_id, "name": "launch", "expires_in_days": days}
        )
        if code != 201:
            raise RuntimeError(f"no token for {staff_id}: {code} {body}")
        return str(body["token"])

    def set_password(self, staff_id: str, password: str) -> None:
        """``jiayuan staff password STAFF_ID --stdin`` with this service's settings."""
        subprocess.run(
            [sys.executable, "-m", "jiayuan.cli", "staff", "password", staff_id, "--stdin"],
            input=password.encode() + b"\n",
            env=self.env,
            check=True,
            capture_output=True,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.proc is not None:
            children.stop(self.proc, kill=True)
        self.proc = None

    def stop(self, timeout: float = 30.0, grace: float = 0.0) -> int | None:
        """SIGTERM, after reading the error counters; then raises :class:`UnexpectedErrors` if
        one moved that ``expect_errors`` does not cover. A ``grace`` says the process was told
        to stop already (a terminal's Ctrl-C in the demo): it is not asked for its counters."""
        if self.proc is None:
            return None
        errors: dict[str, float] = {}
        unread: httpx.HTTPError | None = None
        checked = grace == 0 and self.proc.poll() is None
        logged = self._log_size()
        if checked:
            try:
                errors = unexpected(self.errors(), self.expect_errors)
            except httpx.HTTPError as e:  # stopped all the same, then said
                unread = e
        rc = children.stop(self.proc, grace=grace, timeout=timeout)
        self.proc = None
        if unread is not None:
            raise RuntimeError(f"jiayuan run's error counters unread: {unread!r}") from unread
        if checked:  # what it logged while stopping, after its counters were read
            errors |= unexpected(self._logged_errors(logged), self.expect_errors)
            if rc != 0:
                errors[f"exit code {rc}"] = 1
        if errors:
            raise UnexpectedErrors(self._explain(errors))
        return rc

    def _log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def _logged_errors(self, since: int) -> dict[str, float]:
        with self.log.open("rb") as f:
            f.seek(since)
            return logged_errors(f.read().decode(errors="replace"))

    def _explain(self, errors: Mapping[str, float]) -> str:
        counted = "\n".join(f"  {k} {v:g}" for k, v in sorted(errors.items()))
        logged = _error_records(self.log.read_text(errors="replace") if self.log.exists() else "")
        return (
            f"jiayuan run counted errors not declared in expect_errors:\n{counted}\n"
            f"its errors in {self.log}:\n{logged}"
        )


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) ([^\s:]+):", re.MULTILINE)


def logged_errors(log: str) -> dict[str, float]:
    """The ERROR and CRITICAL records of a service log, counted by logger as the service's
    ``jiayuan_log_errors_total`` counts them (for what it logs after its counters were read)."""
    found: dict[str, float] = {}
    for m in _RECORD.finditer(log):
        if m.group(1) in ("ERROR", "CRITICAL"):
            key = _key("jiayuan_log_errors_total", {"logger": m.group(2)})
            found[key] = found.get(key, 0) + 1
    return found


def _error_records(log: str, limit: int = 6000) -> str:
    """The ERROR and CRITICAL records of a service log, tracebacks included, the last
    ``limit`` characters of them."""
    starts = [(m.start(), m.group(1)) for m in _RECORD.finditer(log)] + [(len(log), "")]
    out = [log[a:b] for (a, level), (b, _) in pairwise(starts) if level in ("ERROR", "CRITICAL")]
    return "".join(out)[-limit:] or "  (none logged)"
