"""A strict front for VictoriaMetrics that refuses points the way InfluxDB 2.x does.

VictoriaMetrics accepts (skips) whatever it cannot parse and never answers 400, so the sink's
path for points refused for good cannot be met through it alone. This front checks each line's
field types against the types its "bucket" already holds — InfluxDB's field type conflict,
the common real-world refusal (say an older collector wrote ``steps`` as a float) — passes the
valid lines on to VictoriaMetrics and, when it dropped any, answers like InfluxDB's partial
write: 400 ``{"code": "invalid", "message": "partial write: field type conflict: … dropped=N"}``.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devtools.broker import free_port

_FIELD = re.compile(r'([^,=\s]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def _type(value: str) -> str:
    if value.startswith('"'):
        return "string"
    if value in ("t", "f", "true", "false", "T", "F", "TRUE", "FALSE"):
        return "boolean"
    return "integer" if value.endswith("i") else "float"


def _fields(line: str) -> tuple[str, list[tuple[str, str]]]:
    """(measurement, [(field, type)]) of a line without escaped spaces in its tags."""
    head, fields, _ts = line.rsplit(" ", 2)
    return head.split(",", 1)[0], [(k, _type(v)) for k, v in _FIELD.findall(fields)]


class StrictFront:
    def __init__(self, upstream: str, types: dict[tuple[str, str], str]) -> None:
        self.upstream = upstream
        self.types = dict(types)
        """(measurement, field) → type the bucket already holds."""
        self.refused: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, reply = front.write(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> StrictFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write(self, path: str, body: bytes) -> tuple[int, bytes]:
        keep: list[str] = []
        conflicts: list[str] = []
        with self._lock:
            for line in body.decode().splitlines():
                measurement, fields = _fields(line)
                clash = [
                    (f, t, self.types[(measurement, f)])
                    for f, t in fields
                    if self.types.get((measurement, f), t) != t
                ]
                if clash:
                    f, t, held = clash[0]
                    conflicts.append(
                        f'input field "{f}" on measurement "{measurement}" is type {t},'
                        f" already exists as type {held}"
                    )
                    self.refused.append(line)
                    continue
                for f, t in fields:
                    self.types.setdefault((measurement, f), t)
                keep.append(line)
        if keep:
            req = urllib.request.Request(
                self.upstream + path, data="\n".join(keep).encode(), method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
            except OSError as e:
                return 503, json.dumps({"code": "unavailable", "message": str(e)}).encode()
        if conflicts:
            message = f"partial write: field type conflict: {conflicts[0]} dropped={len(conflicts)}"
            return 400, json.dumps({"code": "invalid", "message": message}).encode()
        return 204, b""
