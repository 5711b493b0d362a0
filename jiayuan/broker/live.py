"""Broker accounts that follow the registry while the service runs.

When a device is added or retired through the API (or a reloaded registry file), the service
writes the accounts again with :func:`jiayuan.broker.accounts.write_credentials` into the
directory Mosquitto reads (``JIAYUAN_BROKER_ACCOUNTS_DIR``, what ``jiayuan broker credentials
--out`` writes), then makes the broker read them again: Mosquitto re-reads its
``password_file`` and ``acl_file`` on SIGHUP, sent to the pid in ``JIAYUAN_BROKER_PID_FILE`` or
by ``JIAYUAN_BROKER_RELOAD_COMMAND`` (e.g. ``systemctl reload mosquitto``, run without a
shell). Accounts still in the registry keep their passwords; test-only accounts already in the
directory are kept as they are.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ingest.access import CredentialsFile
from ingest.profiles import Profiles
from jiayuan.broker.accounts import ACL, CREDENTIALS, TEST_PREFIX, Report, write_credentials
from registry import Registry

RELOAD_TIMEOUT_S = 30.0


class BrokerReloadError(RuntimeError):
    """The accounts were written but the broker could not be told to read them."""


@dataclass(frozen=True, slots=True)
class AccountsUpdate:
    """What one update did; ``passwords`` holds the new accounts' passwords, to be shown once
    to whoever added them (never logged, never audited)."""

    report: Report
    passwords: dict[str, str] = field(default_factory=dict)
    reload_failed: str | None = None
    """Why the broker could not be told to read the files written (they are written)."""


class BrokerAccounts:
    def __init__(
        self,
        directory: Path,
        *,
        reload_command: str | None = None,
        pid_file: Path | None = None,
        group: str | None = None,
        profiles: Profiles | None = None,
    ) -> None:
        if reload_command is None and pid_file is None:
            raise ValueError("BrokerAccounts: a reload command or a pid file is needed")
        self.directory = directory
        self.reload_command = reload_command
        self.pid_file = pid_file
        self.group = group
        self.profiles = profiles
        """The device profiles in force: their bridges' accounts and the topics the service
        reads are written as ``jiayuan broker credentials --profiles`` writes them."""

    def describe(self) -> str:
        how = (
            f"`{self.reload_command}`"
            if self.reload_command
            else f"SIGHUP to the pid in {self.pid_file}"
        )
        return f"accounts in {self.directory}, broker reloaded by {how}"

    def update(self, registry: Registry, *, force: bool = False) -> AccountsUpdate:
        """Write the accounts for ``registry`` and reload the broker when an account or a
        permission (a device moved to another compound's gateway, say) changed. Raises
        ``ValueError``/``OSError`` when the files cannot be written; a broker that could not be
        told is said in ``reload_failed``. ``force``: reload even when nothing changed (the last
        reload failed)."""
        path = self.directory / CREDENTIALS
        previous = CredentialsFile.load(path) if path.exists() else None
        tests = [u.removeprefix(TEST_PREFIX) for u in previous.tests] if previous else []
        gateways = previous is None or bool(previous.gateways) or not previous.devices
        acl = self.directory / ACL
        before = acl.read_bytes() if acl.exists() else b""
        report = write_credentials(
            registry,
            self.directory,
            gateways=gateways,
            tests=tests,
            group=self.group,
            profiles=self.profiles,
        )
        if not (force or report.added or report.removed) and acl.read_bytes() == before:
            return AccountsUpdate(report)  # nothing the broker reads has changed
        creds = CredentialsFile.load(path)
        passwords = {u: pw for u in report.added if (pw := creds.password_of(u)) is not None}
        try:
            self.reload()
        except BrokerReloadError as e:
            return AccountsUpdate(report, passwords, str(e))
        return AccountsUpdate(report, passwords)

    def reload(self) -> None:
        """Have the broker read its password and ACL files again."""
        if self.reload_command:
            try:
                done = subprocess.run(
                    shlex.split(self.reload_command),
                    capture_output=True,
                    timeout=RELOAD_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                raise BrokerReloadError(f"`{self.reload_command}`: {e}") from e
            if done.returncode != 0:
                said = done.stderr.decode(errors="replace").strip()[:200]
                raise BrokerReloadError(
                    f"`{self.reload_command}` exited {done.returncode}"
                    + (f": {said}" if said else "")
                )
            return
        assert self.pid_file is not None
        try:
            pid = int(self.pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError, IndexError) as e:
            raise BrokerReloadError(f"SIGHUP to the pid in {self.pid_file}: {e}") from e
