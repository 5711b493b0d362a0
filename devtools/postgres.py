"""A throwaway PostgreSQL for the tests, the benchmark and the district demo variant.

:class:`Postgres` makes a cluster with ``initdb`` in a fresh temporary directory, starts it with
``pg_ctl`` on a free loopback port (its Unix socket in that directory too), and on ``stop()``
shuts it down and removes the directory. No system service, no ``/etc`` file, nothing left
behind. It is a context manager::

    with Postgres() as pg:
        url = pg.create_database("t1")   # postgresql://jiayuan@127.0.0.1:<port>/t1

The binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``,
the newest installed version), or from ``$PATH`` elsewhere.

``initdb`` and ``postgres`` refuse to run as root. When this process is root (the tests in a
container, CI), the cluster is run as an unprivileged account — ``postgres``, which Debian's
package creates, else ``nobody`` — by ``subprocess``'s own ``user=``/``group=`` (a setuid in the
child before exec: no ``su``, ``runuser`` or PAM session involved), over a directory chowned to
that account. The directory is made directly under the system's temporary folder, which every
account can traverse (pytest's ``tmp_path`` under ``/tmp/pytest-of-root`` is not).

Authentication is ``trust`` for connections on loopback and the socket: a throwaway cluster on
a development machine, never a deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from base import procstat
from devtools import children
from devtools.broker import free_port

SUPERUSER = "jiayuan"
"""The cluster's superuser, and the user of every URL handed out."""

TEST_SETTINGS: Mapping[str, str] = {"fsync": "off", "synchronous_commit": "off"}
"""For tests: nothing is worth an fsync in a cluster deleted at the end of the session. The
benchmark keeps PostgreSQL's durable defaults."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.parent.name)) or (0,)


def find_bindir() -> Path:
    """The ``bin`` directory of the newest installed PostgreSQL server."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise FileNotFoundError("initdb not found: install Debian's postgresql package")


def _run_as() -> pwd.struct_passwd | None:
    """The account to run the cluster as: None for this process's own (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")


class Postgres:
    """A PostgreSQL cluster in a temporary directory on 127.0.0.1:``port``.

    ``settings``: server options (``-c name=value``), e.g. :data:`TEST_SETTINGS`."""

    def __init__(
        self,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.env = dict(env or {})
        """More environment for the server (``LD_PRELOAD`` and ``FAKETIME``: its clock out)."""
        self.port = port or free_port()
        self._picked = port is None
        """A port chosen here, which its first start may change if another process took it."""
        self.settings = dict(settings or {})
        self.bindir = bindir or find_bindir()
        self.account = _run_as()
        self.root: Path | None = None
        """The temporary directory: ``data/`` (the cluster), ``postgres.log``, the socket."""

    # ------------------------------------------------------------------ urls

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Make an empty database ``name`` and return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending its sessions first (a test's pool may still hold some)."""
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # ------------------------------------------------------------------ process

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def log(self) -> Path:
        """The server's log (written by the cluster's account)."""
        assert self.root is not None, "not started"
        return self.root / "postgres.log"

    @property
    def tools_log(self) -> Path:
        """What ``initdb`` and ``pg_ctl`` said."""
        assert self.root is not None, "not started"
        return self.root / "tools.log"

    def _run(self, args: Sequence[str], timeout: float = 120.0) -> None:
        """Run a PostgreSQL tool as the cluster's account; its output goes to the log."""
        with open(self.tools_log, "ab") as out:
            done = subprocess.run(
                [str(self.bindir / args[0]), *args[1:]],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "LC_ALL": "C",
                    "TZ": "UTC",
                    **self.env,
                },
                cwd=self.root,
                user=self.account.pw_uid if self.account else None,
                group=self.account.pw_gid if self.account else None,
                extra_groups=[] if self.account else None,
            )
        if done.returncode != 0:
            tail = "".join(
                f.read_text(errors="replace")[-2000:]
                for f in (self.tools_log, self.log)
                if f.exists()
            )
            raise RuntimeError(f"{args[0]} exited with {done.returncode}:\n{tail}")

    def start(self, timeout: float = 60.0, *, standby_of: Postgres | None = None) -> Postgres:
        """Make the cluster and start it. ``standby_of``: a streaming standby of that running
        cluster instead (``pg_basebackup -R``: its data, then its WAL as it is written), read
        only until :meth:`promote`."""
        self.root = Path(tempfile.mkdtemp(prefix="jiayuan-pg-", dir=tempfile.gettempdir()))
        try:
            if self.account is not None:
                os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
            if standby_of is not None:
                self._run(
                    [
                        *("pg_basebackup", "-D", str(self.data_dir), "-R", "-X", "stream"),
                        *("-h", standby_of.host, "-p", str(standby_of.port), "-U", SUPERUSER),
                        *("--checkpoint=fast", "--no-sync"),
                    ]
                )
            else:
                self._run(
                    [
                        "initdb",
                        "-D",
                        str(self.data_dir),
                        "-U",
                        SUPERUSER,
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-sync",
                        "--no-instructions",
                    ]
                )

            def repick() -> None:
                self.port = free_port()

            children.start_listening(
                lambda: self._pg_start(timeout), self.log, repick if self._picked else None
            )
            self._picked = False  # its URLs are known now: resume() keeps the port
        except BaseException:
            self.stop()
            raise
        return self

    def _pg_start(self, timeout: float) -> None:
        assert self.root is not None
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            **self.settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            [
                *("pg_ctl", "start", "-w", "-t", str(int(timeout))),
                *("-D", str(self.data_dir), "-l", str(self.log), "-o", opts),
            ],
            timeout=timeout + 10,
        )
        self._wait_ready(timeout)

    def halt(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``: sessions ended) and keep its data, for a
        test of the database going away; :meth:`resume` starts it again."""
        self._run(["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir)])

    def resume(self, timeout: float = 60.0) -> None:
        """Start the server :meth:`halt` stopped, on the same port, over the same data."""
        self._pg_start(timeout)

    def kill(self) -> None:
        """SIGKILL the server and every process of it at once (its machine gone): no
        shutdown, no checkpoint, connections cut. Its data stays until :meth:`stop`; its
        System V shared memory segment, which a SIGKILL leaves, is removed. (Dynamic shared
        memory stays in ``/dev/shm`` unless ``dynamic_shared_memory_type=mmap`` put it in the
        data directory.)"""
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        os.kill(pid, signal.SIGSTOP)  # no backend forked while the family is listed
        family = [pid, *procstat.children(pid)]
        for p in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(procstat.running(p) for p in family):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL (pid {pid}) still runs after SIGKILL")
            time.sleep(0.02)
        shm = lines[6].split() if len(lines) > 6 else []  # "key id" of its segment
        if len(shm) == 2 and shutil.which("ipcrm"):
            subprocess.run(["ipcrm", "-m", shm[1]], capture_output=True, check=False)
        (self.data_dir / "postmaster.pid").unlink()

    def promote(self, timeout: float = 60.0) -> None:
        """A standby (``start(standby_of=…)``) made a primary: it takes writes from now on."""
        self._run(
            ["pg_ctl", "promote", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir)],
            timeout=timeout + 10,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as db:
                    db.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Shut the cluster down (``pg_ctl stop -m fast``) and delete its directory."""
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir)])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(
        self,
        _t: type[BaseException] | None,
        _e: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Run a throwaway PostgreSQL until Ctrl-C (deleted afterwards)"
    )
    p.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    p.add_argument("--database", default="jiayuan", help="a database to create")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop deletes it as Ctrl-C does
    with Postgres(args.port) as pg:
        url = pg.create_database(args.database)
        print(f"PostgreSQL {pg.bindir.parent.name} at {url} (data in {pg.root})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
