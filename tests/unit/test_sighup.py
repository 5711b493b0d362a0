"""SIGHUP to ``jiayuan run`` (read the registry files again): asked at any time, even while the
service is still being built, it never ends the process; the handler only asks, and one
long-lived thread does the reloads, never saying a refused value in the log."""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from jiayuan.cli import reload_registry
from registry import Problem, RegistryError

STARTING = textwrap.dedent(
    """
    import os, signal, sys
    import jiayuan.service
    from ingest.profiles import ProfileFileError

    class Starting:  # a service still being built when SIGHUP comes
        def __init__(self, settings):
            os.kill(os.getpid(), signal.SIGHUP)
            raise ProfileFileError(["profiles.yaml: stop here (the test)"])

    jiayuan.service.Service = Starting
    from jiayuan.cli import main
    sys.exit(main(["run"]))
    """
)


def test_a_reload_asked_while_the_service_is_built_does_not_end_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYUAN_")} | {
        "JIAYUAN_DATA_DIR": str(tmp_path)
    }
    done = subprocess.run(
        [sys.executable, "-c", STARTING],
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 2: the run ended as a bad profile ends it, not killed by the signal (-1)
    assert done.returncode == 2, done.stderr
    assert "stop here (the test)" in done.stderr


class Admin:
    def __init__(self, outcomes: list[Exception | None]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def reload(self, *, actor: str) -> object:
        assert actor == "system:SIGHUP"
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome

        class Applied:
            class diff:
                @staticmethod
                def summary() -> str:
                    return "staff +0 -0 ~1"

        return Applied()


class FakeService:
    def __init__(self, admin: Admin) -> None:
        self.registry_admin = admin


def test_one_thread_does_the_reloads_and_logs_no_refused_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = Problem(
        "residents.yaml", 2, "display_name", "too long (got '王秀英奶奶住在三号楼')", "line"
    )
    admin = Admin([RegistryError([name]), None])
    reloads: queue.SimpleQueue[bool] = queue.SimpleQueue()
    thread = threading.Thread(target=reload_registry, args=(FakeService(admin), reloads))
    with caplog.at_level(logging.INFO, logger="jiayuan"):
        thread.start()
        reloads.put(True)  # refused
        while admin.calls < 1:
            threading.Event().wait(0.01)
        reloads.put(True)  # taken
        while admin.calls < 2:
            threading.Event().wait(0.01)
        reloads.put(False)
        thread.join(timeout=60)
    assert not thread.is_alive() and admin.calls == 2
    text = caplog.text
    assert "residents.yaml line 2, field 'display_name': too long" in text
    assert "王" not in text and "staff +0 -0 ~1" in text
