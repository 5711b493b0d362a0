"""Run VictoriaMetrics (Debian's ``victoria-metrics``) as a stand-in InfluxDB for the tests and
the benchmark: it serves the InfluxDB v2 write API (``/api/v2/write``) and exports what it
stored (``/api/v1/export``). No InfluxDB 2.x or 3.x server installs from Debian or PyPI here.

What differs from InfluxDB, and what the checks do about it:

- it keeps numbers only: a line's fields become series ``<measurement>_<field>`` and a string
  field arrives as a series of zeros, so event points are checked by series and count;
- it stores a sample sent twice twice, where InfluxDB overwrites a point with the same series
  and time. ``dedup=True`` (``-dedup.minScrapeInterval=1ms``, one sample per series and
  millisecond, the sink's precision) makes its exports count what InfluxDB would hold; the
  samples it was sent, resends included, are :meth:`Victoria.samples_received`;
- it accepts malformed lines (skipping them) instead of refusing the request with a 400.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from devtools import children
from devtools.broker import free_port


def find(program: str) -> str:
    """A program of Debian's victoria-metrics package, on PATH or in /usr/bin."""
    for cand in (shutil.which(program), f"/usr/bin/{program}"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError(f"{program} not found: install Debian's victoria-metrics")


class _Served:
    """A VictoriaMetrics program serving HTTP on 127.0.0.1:port, its files in ``data_dir``."""

    program = ""
    """The executable (:func:`find`); its log is ``data_dir/<program>.log``."""

    def __init__(self, data_dir: Path, port: int | None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._picked = port is None
        """A port chosen here, which its first start may change if another process took it."""
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.TransportError:  # not listening yet
            return False

    def _args(self) -> list[str]:
        """The program's flags besides its address."""
        raise NotImplementedError

    def _start(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / f"{self.program}.log"

        def start() -> None:
            args = [find(self.program), f"-httpListenAddr={self.host}:{self.port}", *self._args()]
            self.proc = children.spawn(args, log)
            children.wait_ready(
                self.proc, self._healthy, name=self.program, log=log, timeout=timeout
            )

        def repick() -> None:
            self.port = free_port()

        children.start_listening(start, log, repick if self._picked else None)
        self._picked = False  # its URL is known now: a restart keeps the port

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            children.stop(self.proc, kill=kill, timeout=60)
            self.proc = None


class Victoria(_Served):
    """A VictoriaMetrics process on 127.0.0.1:port over ``data_dir``. ``stop()`` shuts it
    down cleanly (what it acknowledged is on disk); ``start()`` again serves the same data."""

    program = "victoria-metrics"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        dedup: bool = False,
        retention: str = "100y",
        extra: tuple[str, ...] = (),
    ) -> None:
        super().__init__(data_dir, port)
        self.dedup = dedup
        self.retention = retention
        self.extra = extra

    def start(self, timeout: float = 20.0) -> Victoria:
        self._start(timeout)
        return self

    def _args(self) -> list[str]:
        return [
            f"-storageDataPath={self.data_dir / 'storage'}",
            f"-retentionPeriod={self.retention}",
            *(["-dedup.minScrapeInterval=1ms"] if self.dedup else []),
            *self.extra,
        ]

    def restart(self) -> None:
        self.stop()
        self.start()

    # ------------------------------------------------------------------ what it stored

    def flush(self) -> None:
        """Make what it accepted searchable now rather than within a second or two."""
        httpx.get(self.url + "/internal/force_flush", timeout=30).raise_for_status()

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """Every series matching ``match`` with its samples:
        ``{"metric": {"__name__": …, tags…}, "values": […], "timestamps": […]}``."""
        r = httpx.get(self.url + "/api/v1/export", params={"match[]": match}, timeout=120)
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def samples(self, match: str = '{__name__=~".+"}') -> Counter[tuple[str, str, int]]:
        """(series name, device_id, timestamp in ms) → how many samples it holds there."""
        out: Counter[tuple[str, str, int]] = Counter()
        for s in self.export(match):
            name, dev = s["metric"]["__name__"], s["metric"].get("device_id", "")
            for ts in s["timestamps"]:
                out[(name, dev, int(ts))] += 1
        return out

    def samples_received(self) -> int:
        """Samples received over the Influx protocol since it started, resends included."""
        r = httpx.get(self.url + "/metrics", timeout=10)
        r.raise_for_status()
        m = re.search(r'^vm_rows_inserted_total\{type="influx"\} (\d+)', r.text, re.M)
        return int(m.group(1)) if m else 0


class Vmagent(_Served):
    """VictoriaMetrics' agent (Debian's ``vmagent``) on 127.0.0.1:port: it takes the InfluxDB
    write API (``/api/v2/write``) like a server, keeps what it accepted in a persistent queue
    on disk (``data_dir``) and forwards every sample to EACH of ``storage`` (VictoriaMetrics
    nodes, by their base URL): replication, so one node may be down or replaced while the
    others and the queue hold the data. The write path of a district's time-series store
    without a single store node in it (docs/district.md)."""

    program = "vmagent"

    def __init__(self, data_dir: Path, storage: list[str], port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.storage = storage

    def start(self, timeout: float = 20.0) -> Vmagent:
        self._start(timeout)
        return self

    def _args(self) -> list[str]:
        return [
            f"-remoteWrite.tmpDataPath={self.data_dir / 'queue'}",
            "-remoteWrite.flushInterval=200ms",
            *(f"-remoteWrite.url={s}/api/v1/write" for s in self.storage),
        ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run VictoriaMetrics as a stand-in InfluxDB")
    p.add_argument("--port", type=int, default=8428)
    p.add_argument("--data", type=Path, default=Path("data/victoria"))
    args = p.parse_args(argv)
    vm = Victoria(args.data.resolve(), args.port).start()
    print(
        f"victoria-metrics on {vm.url} (data in {vm.data_dir}); JIAYUAN_INFLUX_URL={vm.url}",
        flush=True,
    )
    return children.serve(vm.proc, vm.stop)


if __name__ == "__main__":
    sys.exit(main())
