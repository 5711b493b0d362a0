"""Staff access on PostgreSQL: with ``JIAYUAN_DATABASE_URL`` the service keeps passwords,
sessions and the audit trail in the database (every instance sees the same), not in
``auth.db``; and ``jiayuan staff password`` writes to the store the running service reads."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from base.datadir import DataDir
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from registry import Building, Device, Registry, Staff, write_registry
from tests.stores import Stores

pytestmark = pytest.mark.network

PASSWORD = "correct horse battery staple"


def one_guard(directory: Path) -> None:
    """A registry of one building, one wearable and one guard (``guard-1``) in ``directory``."""
    write_registry(
        Registry(
            "y",
            buildings=[Building(building="B1", compound="C01")],
            devices=[Device(device_id="wr-1", kind="wearable", compound="C01", building="B1")],
            staff=[Staff(staff_id="guard-1", name="Guard One", role="security")],
        ),
        directory,
    )


def test_staff_access_and_its_audit_live_in_the_database(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    one_guard(tmp_path / "registry")
    stores = Stores(pg_url)
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker.port, registry=tmp_path / "registry", **stores.settings)
    svc.start()
    try:
        # the registry's staff, seen at start and audited, in the database
        assert stores.journal(data, "SELECT count(*) FROM registry_seen") > 0
        assert stores.journal(data, "SELECT count(*) FROM audit") >= 1
        svc.set_password("guard-1", PASSWORD)  # the command, with the service's settings
        assert stores.journal(data, "SELECT count(*) FROM credentials") == 1
        r = httpx.post(
            svc.url + "/api/auth/login",
            json={"staff_id": "guard-1", "password": PASSWORD},
            timeout=10,
        )
        assert r.status_code == 200, r.text  # the running service signs in with it
        assert stores.journal(data, "SELECT count(*) FROM sessions") == 1
    finally:
        svc.stop()
    assert not DataDir(data).auth.exists()  # nothing of staff access in the data directory
