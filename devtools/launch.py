"""Start ``jiayuan run`` and ``jiayuan simulate`` as child processes: for the demo, the
benchmark and the integration tests, which all need the real service, not an imitation."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devtools import children
from devtools.broker import Broker, free_port


class ServiceProcess:
    """``jiayuan run`` on 127.0.0.1 with the given settings (``JIAYUAN_*`` without prefix).

    ``mqtt``: a :class:`Broker`, reached with the service's account over its TLS listener (its
    plain loopback one with ``tls=False``); or a port on 127.0.0.1, the account then coming
    from the environment (``JIAYUAN_MQTT_*``)."""

    def __init__(
        self,
        data_dir: Path,
        mqtt: int | Broker,
        http_port: int | None = None,
        *,
        log: Path | None = None,
        tls: bool = True,
        **settings: Any,
    ) -> None:
        self.data_dir = data_dir
        self.http_port = http_port or free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = log or data_dir / "service.log"
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
        self.proc = children.spawn([sys.executable, "-m", "jiayuan.cli", "run"], self.log, self.env)
        children.wait_ready(
            self.proc,
            lambda: bool(self.health().get("mqtt_connected")),
            name="jiayuan run",
            log=self.log,
            timeout=timeout,
            interval=0.1,
        )
        return self

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/healthz", ok_statuses=(200, 503))
        return body

    def _request(self, path: str, token: str | None, **kw: Any) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {token or self.token}", **kw.pop("headers", {})}
        return urllib.request.Request(self.url + path, headers=headers, **kw)

    def get(
        self, path: str, ok_statuses: tuple[int, ...] = (200,), *, token: str | None = None
    ) -> Any:
        """GET JSON with a bearer token (the admin token unless ``token``)."""
        try:
            with urllib.request.urlopen(self._request(path, token), timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code in ok_statuses:
                return json.loads(e.read())
            raise

    def get_text(self, path: str, *, token: str | None = None) -> str:
        with urllib.request.urlopen(self._request(path, token), timeout=10) as r:
            return str(r.read().decode())

    def post(self, path: str, body: dict[str, Any], *, token: str | None = None) -> tuple[int, Any]:
        req = self._request(
            path,
            token,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

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
        if self.proc is None:
            return None
        rc = children.stop(self.proc, grace=grace, timeout=timeout)
        self.proc = None
        return rc
