"""The demo's local notification receiver: a tiny HTTP server on loopback that accepts what
apprise's ``json://`` sends (``POST /notify/<staff id>`` with ``{"title", "message", "type"}``),
writes one line per message to a log file, and lists the latest at ``GET /`` (HTML) and
``GET /messages`` (JSON). The simulated community's staff channels point at it
(``json://127.0.0.1:8025/notify/<staff id>``). Tests use it as a real HTTP receiver, and can
make it refuse messages for a recipient (``fail``).

Times on the page and in the log are the community's local time (``--tz``, by default
``JIAYUAN_TIMEZONE`` or Asia/Shanghai, as the service's messages), with the zone named.

    python -m devtools.receiver [--port 8025] [--log data/demo/notifications.log] [--tz ZONE]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

MAX_BODY = 64 * 1024
DEFAULT_TZ = "Asia/Shanghai"


def community_tz() -> ZoneInfo:
    """The community's time zone: ``JIAYUAN_TIMEZONE`` (as the service reads it) or Shanghai."""
    return ZoneInfo(os.environ.get("JIAYUAN_TIMEZONE") or DEFAULT_TZ)


@dataclass(frozen=True, slots=True)
class Received:
    at: float
    recipient: str
    title: str
    message: str
    type: str
    key: str = ""
    """The sender's ``Idempotency-Key`` header (jiayuan's: the delivery's id): the same key
    twice is one message sent twice (a dead instance's send taken over)."""

    def local(self, tz: ZoneInfo) -> datetime:
        return datetime.fromtimestamp(self.at, tz)

    def line(self, tz: ZoneInfo | None = None) -> str:
        when = self.local(tz or community_tz()).strftime("%Y-%m-%d %H:%M:%S %Z")
        text = " | ".join(x for x in (self.title, *self.message.splitlines()) if x)
        return f"{when}  {self.recipient:<16} {text}"


class Receiver:
    """``start()`` serves on a thread; ``stop()`` ends it. Thread-safe reads."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8025,
        log: Path | None = None,
        keep: int = 500,
        tz: ZoneInfo | None = None,
    ) -> None:
        self.log = log
        self.tz = tz or community_tz()
        self._messages: deque[Received] = deque(maxlen=keep)
        self._cond = threading.Condition()
        self.fail: dict[str, int] = {}
        """Recipient → HTTP status to answer instead of 200 (tests: a refusing channel)."""
        self.refused = 0
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def messages(self, recipient: str | None = None) -> list[Received]:
        with self._cond:
            return [m for m in self._messages if recipient is None or m.recipient == recipient]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0
    ) -> list[Received]:
        """Wait (with a deadline) until ``predicate(messages)`` holds; AssertionError if not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._messages)):
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [m.line(self.tz) for m in self._messages]
                    raise AssertionError(f"receiver: condition not met in {timeout}s; got {got}")
                self._cond.wait(left)
            return list(self._messages)

    def _add(self, m: Received) -> None:
        with self._cond:
            self._messages.append(m)
            if self.log is not None:
                with self.log.open("a", encoding="utf-8") as f:
                    f.write(m.line(self.tz) + "\n")
            self._cond.notify_all()

    def _page(self) -> bytes:
        zone = datetime.now(self.tz).strftime("%Z")
        rows = "".join(
            f"<tr><td>{html.escape(m.local(self.tz).strftime('%m-%d %H:%M:%S'))}</td>"
            f"<td>{html.escape(m.recipient)}</td><td><b>{html.escape(m.title)}</b><br>"
            f"{html.escape(m.message).replace(chr(10), '<br>')}</td></tr>"
            for m in reversed(self.messages())
        )
        page = (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5>"
            "<title>jiayuan notifications</title><style>body{font:14px sans-serif;margin:2em}"
            "td{border-bottom:1px solid #ddd;padding:.4em;vertical-align:top}</style>"
            f"<h1>Notifications received ({len(self.messages())})</h1>"
            f"<p>Times in {html.escape(self.tz.key)} ({html.escape(zone)}), the community's.</p>"
            f"<table>{rows or '<tr><td>none yet</td></tr>'}</table>"
        )
        return page.encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._reply(413, b"too large\n", "text/plain")
                    return
                try:
                    data = json.loads(self.rfile.read(length) or b"{}")
                    assert isinstance(data, dict)
                except (ValueError, AssertionError):
                    self._reply(400, b"expected a JSON object\n", "text/plain")
                    return
                recipient = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "-"
                status = receiver.fail.get(recipient)
                if status is not None:
                    receiver.refused += 1
                    self._reply(status, b"refused (test)\n", "text/plain")
                    return
                receiver._add(
                    Received(
                        time.time(),
                        recipient,
                        str(data.get("title", "")),
                        str(data.get("message", "")),
                        str(data.get("type", "")),
                        self.headers.get("Idempotency-Key") or "",
                    )
                )
                self._reply(200, b'{"ok": true}\n', "application/json")

            def do_GET(self) -> None:
                if self.path.startswith("/messages"):
                    items: list[dict[str, Any]] = [asdict(m) for m in receiver.messages()]
                    body = json.dumps(items, ensure_ascii=False).encode()
                    self._reply(200, body, "application/json")
                else:
                    self._reply(200, receiver._page(), "text/html; charset=utf-8")

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m devtools.receiver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--host", default="127.0.0.1", help="loopback only by default")
    ap.add_argument("--port", type=int, default=8025)
    ap.add_argument("--log", type=Path, default=Path("data/demo/notifications.log"))
    ap.add_argument(
        "--tz",
        type=ZoneInfo,
        default=None,
        help=f"the community's time zone (default JIAYUAN_TIMEZONE or {DEFAULT_TZ})",
    )
    args = ap.parse_args(argv)
    receiver = Receiver(args.host, args.port, args.log, tz=args.tz).start()
    print(
        f"notification receiver on http://{args.host}:{receiver.port}/ (log {args.log})", flush=True
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
