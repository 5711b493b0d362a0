"""Run Mosquitto with the project's ``mosquitto.conf`` for the demo, the tests and the benchmark.

Only two things change from the file: the listener port (tests take a free one) and the
persistence folder (under the run's own data directory, owned by whoever runs it). Everything
else — queue sizes, in-flight window, persistence — is exactly what operators deploy.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_CONF = Path(__file__).resolve().parent.parent / "mosquitto.conf"


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError("mosquitto not found: install Debian's mosquitto package")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_conf(port: int, data_dir: Path, source: Path = PROJECT_CONF) -> str:
    text = source.read_text()
    text = re.sub(r"(?m)^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1", text)
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data_dir}/", text)
    if f"listener {port} " not in text:
        raise ValueError(f"{source}: no 'listener 1883 127.0.0.1' line to move to port {port}")
    return text + f"\nuser {getpass.getuser()}\n"


class Broker:
    """A Mosquitto process on 127.0.0.1:port; ``stop()`` shuts it down cleanly (state saved)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(render_conf(self.port, self.data_dir))
        log = open(self.data_dir / "mosquitto.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode};"
                    f" see {self.data_dir}/mosquitto.log"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run Mosquitto with the project's mosquitto.conf")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--data", type=Path, default=Path("data/mosquitto"))
    args = p.parse_args(argv)
    broker = Broker(args.data.resolve(), args.port).start()
    print(f"mosquitto on {broker.host}:{broker.port} (data in {broker.data_dir})", flush=True)
    try:
        assert broker.proc is not None
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
