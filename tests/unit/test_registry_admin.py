"""The registry changed while running, part by part: the files written (and read back the same),
the one holder and its swap hooks, refusals that change nothing, the broker's accounts kept in
step, the settings for them, and a retired device no longer awaited by the rules."""

from __future__ import annotations

import grp
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.access import CredentialsFile
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.store import AuthStore
from jiayuan.broker.accounts import CREDENTIALS, write_credentials
from jiayuan.broker.live import BrokerAccounts
from jiayuan.registry_admin import NOT_MANAGED, RegistryAdmin, without_value
from jiayuan.registry_files import SUPERSEDED, NotWritable, RegistryFiles
from jiayuan.settings import Settings
from registry import Building, Device, Registry, RegistryError, Staff, load_registry
from tests.clock import FakeClock
from tests.unit.test_rules_engine import SILENT, T0, engine, hr


def base() -> Registry:
    return Registry(
        "y",
        buildings=[Building(building="B1", compound="C1")],
        devices=[Device(device_id="w-1", kind="wearable", compound="C1", building="B1")],
        staff=[Staff(staff_id="care-1", name="Care", role="caretaker")],
    )


def plus(reg: Registry, device: Device) -> Registry:
    return Registry(
        reg.community,
        buildings=list(reg.buildings.values()),
        devices=[*reg.devices.values(), device],
        residents=list(reg.residents.values()),
        staff=list(reg.staff.values()),
    )


GATE = Device(device_id="g-1", kind="gate", compound="C1")


def test_a_change_is_written_so_that_the_files_read_back_the_same(tmp_path: Path) -> None:
    d = tmp_path / "registry"
    d.mkdir()
    (d / "devices.csv").write_text("device_id,kind,compound,building\nw-1,wearable,C1,B1\n")
    (d / "buildings.csv").write_text("building,compound\nB1,C1\n")
    (d / "staff.yaml").write_text("- {staff_id: care-1, name: Care, role: caretaker}\n")
    files = RegistryFiles(d, "y")
    new = plus(files.read(), GATE)
    assert files.write(new) == ["buildings.csv", "devices.csv"]
    back = load_registry(d)
    assert back.devices == new.devices and back.staff == new.staff
    assert sorted(p.name.split("-", 1)[1] for p in (d / SUPERSEDED).iterdir()) == [
        "buildings.csv",
        "devices.csv",
    ]
    assert not (d / ".staging").exists()


def test_files_edited_since_they_were_read_are_not_overwritten(tmp_path: Path) -> None:
    d = tmp_path / "registry"
    d.mkdir()
    files = RegistryFiles(d, "y")
    files.write(base())
    (d / "staff.yaml").write_text("- {staff_id: care-2, name: Two, role: caretaker}\n")
    with pytest.raises(NotWritable, match="edited since they were read"):
        files.write(plus(base(), GATE))
    assert "care-2" in files.read().staff  # a reload takes the edit; then changes go on
    files.write(plus(files.read(), GATE))
    assert set(load_registry(d).staff) == {"care-2"} and "g-1" in load_registry(d).devices


def test_a_registry_kept_in_one_file_or_nowhere_cannot_be_changed(tmp_path: Path) -> None:
    one = tmp_path / "registry.yaml"
    one.write_text("staff: []\n")
    for files in (RegistryFiles(one, "y"), RegistryFiles(None, "y")):
        assert files.not_writable is not None
        with pytest.raises(NotWritable):
            files.write(base())


@pytest.fixture
def admin(
    tmp_path: Path, auth_at: Path | str
) -> Iterator[tuple[RegistryAdmin, list[str], AuthStore]]:
    """The admin over registry files, auditing to an auth store on each backend."""
    d = tmp_path / "registry"
    files = RegistryFiles(d, "y")
    d.mkdir()
    files.write(base())
    store = AuthStore.open(auth_at, clock=FakeClock(T0))
    a = RegistryAdmin(files.read(), files, audit=AuditLog(store))
    seen: list[str] = []
    a.subscribe("first", lambda r: seen.append(f"first {len(r.devices)}"))
    a.subscribe("second", lambda r: seen.append(f"second {len(r.devices)}"))
    yield a, seen, store
    store.close()


def test_a_change_swaps_in_everywhere_in_order_and_is_audited(
    admin: tuple[RegistryAdmin, list[str], AuthStore],
) -> None:
    a, seen, store = admin
    applied = a.apply_change(plus(a.current, GATE), actor="mgr", action="registry.device_add")
    assert seen == ["first 2", "second 2"] and "g-1" in a.current.devices
    assert applied.diff.devices.added == ["g-1"]
    assert (applied.broker, applied.broker_detail) == ("not managed", NOT_MANAGED)
    assert "g-1" in load_registry(a.files.source or Path()).devices
    (entry,), _ = AuditLog(store).page(action="registry.device_add")
    assert (entry.actor, entry.outcome) == ("mgr", "ok")
    assert entry.detail["diff"]["devices"]["added"] == ["g-1"]
    # the same registry again: nothing to swap
    assert a.apply(a.current, actor="mgr", action="registry.device_add").empty
    assert seen == ["first 2", "second 2"]


def test_a_device_s_way_in_must_be_a_profile_or_an_integration_in_force(
    admin: tuple[RegistryAdmin, list[str], AuthStore],
) -> None:
    """A typo in ``via`` would refuse every reading of the device: the change is refused,
    naming the device and the ways in force; a known one is taken."""
    a, seen, _ = admin
    a.ways = frozenset({"z2m_smoke", "ctwing"})
    typo = Device(device_id="s-1", kind="smoke", compound="C1", via="z2m-smoke")
    with pytest.raises(RegistryError) as e:
        a.apply(plus(a.current, typo), actor="mgr", action="registry.device_add")
    assert [str(p) for p in e.value.problems] == [
        "devices[s-1], field 'via': no device profile or integration 'z2m-smoke'"
        " (known: ctwing, z2m_smoke)"
    ]
    assert seen == [] and "s-1" not in a.current.devices
    a.apply(plus(a.current, typo.model_copy(update={"via": "z2m_smoke"})), actor="mgr",
            action="registry.device_add")  # fmt: skip
    assert a.current.devices["s-1"].via == "z2m_smoke" and seen == ["first 2", "second 2"]


def test_a_change_that_does_not_fit_changes_nothing(
    admin: tuple[RegistryAdmin, list[str], AuthStore],
) -> None:
    a, seen, store = admin
    source = a.files.source
    assert source is not None
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    stray = Device(device_id="w-9", kind="wearable", compound="C1", building="B9")
    with pytest.raises(RegistryError) as e:
        a.apply(plus(a.current, stray), actor="mgr", action="registry.device_add")
    assert [str(p) for p in e.value.problems] == [
        "devices[w-9], field 'building': unknown building 'B9'"
    ]
    assert seen == [] and "w-9" not in a.current.devices
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    (entry,), _ = AuditLog(store).page(action="registry.device_add")
    assert entry.outcome == "refused" and "unknown building" in entry.detail["problems"][0]


def test_broker_accounts_follow_and_the_new_password_is_handed_out_once(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    write_credentials(base(), out, tests=["harness"])
    hup = tmp_path / "reloaded"
    append = "import sys; open(sys.argv[1], 'a').write('x')"
    accounts = BrokerAccounts(out, reload_command=f'{sys.executable} -c "{append}" {hup}')
    update = accounts.update(plus(base(), GATE))
    assert update.report.added == ["g-1"] and hup.read_text() == "x"
    creds = CredentialsFile.load(out / CREDENTIALS)
    assert update.passwords == {"g-1": creds.devices["g-1"]}
    assert "test.harness" in creds.tests  # the harness's account is kept
    assert accounts.update(plus(base(), GATE)).passwords == {}  # nothing new: no reload
    assert hup.read_text() == "x"
    failing = BrokerAccounts(out, reload_command="false")
    assert failing.update(base()).reload_failed == "`false` exited 1"
    assert "g-1" not in json.loads((out / CREDENTIALS).read_text())["devices"]


def test_a_broker_that_could_not_be_reloaded_is_said_and_tried_again(
    admin: tuple[RegistryAdmin, list[str], AuthStore], tmp_path: Path
) -> None:
    a, _, _ = admin
    out = tmp_path / "broker"
    write_credentials(a.current, out)
    a.broker = BrokerAccounts(out, reload_command="false")
    applied = a.apply_change(plus(a.current, GATE), actor="adm", action="registry.device_add")
    assert applied.broker == "failed" and "`false` exited 1" in applied.broker_detail
    assert "g-1" in applied.passwords  # written, and handed out all the same
    assert a.details()["broker_problem"] == applied.broker_detail
    hup = tmp_path / "reloaded"
    a.broker = BrokerAccounts(out, reload_command=f"touch {hup}")
    again = a.reload(actor="adm")  # the same files: nothing changed but the broker is told
    assert again.diff.empty and again.broker == "updated" and hup.exists()
    assert a.health()["broker_problem"] is None


def test_broker_account_settings_fail_fast() -> None:
    with pytest.raises(ValidationError, match="one way to reload"):
        Settings(broker_accounts_dir=Path("/tmp/x"))
    with pytest.raises(ValidationError, match="one way to reload"):
        Settings(
            broker_accounts_dir=Path("/tmp/x"),
            broker_reload_command="systemctl reload mosquitto",
            broker_pid_file=Path("/run/mosquitto.pid"),
        )
    with pytest.raises(ValidationError, match="need broker_accounts_dir"):
        Settings(broker_pid_file=Path("/run/mosquitto.pid"))
    ok = Settings(broker_accounts_dir=Path("/tmp/x"), broker_pid_file=Path("/run/m.pid"))
    assert ok.broker_pid_file == Path("/run/m.pid")


def test_a_retired_device_is_no_longer_awaited(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    reg = Registry("y", devices=[Device(device_id="u1", kind="wearable", compound="C1")])
    eng = engine(tmp_path, SILENT, reg=reg, clock=clock)
    eng.evaluate(hr("u1", 0, 70))
    eng.set_registry(Registry("y"))  # retired, and then silent
    assert eng.tick(T0 + 3600) == []


def test_accounts_that_could_not_be_written_are_said_audited_and_written_at_the_retry(
    admin: tuple[RegistryAdmin, list[str], AuthStore], tmp_path: Path
) -> None:
    a, _, store = admin
    out = tmp_path / "broker"
    write_credentials(a.current, out)
    hup = tmp_path / "reloaded"
    # a group that is not on the machine (the settings refuse it; a constructed one is not)
    a.broker = BrokerAccounts(out, reload_command=f"touch {hup}", group="no-such-group-xq")
    applied = a.apply_change(plus(a.current, GATE), actor="adm", action="registry.device_add")
    assert applied.broker == "failed" and "KeyError" in applied.broker_detail
    assert "g-1" in a.current.devices  # the change stands; the accounts are owed
    assert a.details()["broker_problem"] == applied.broker_detail
    (entry,), _ = AuditLog(store).page(action="registry.device_add")
    assert entry.outcome == "ok" and entry.detail["broker"] == "failed"
    a.broker = BrokerAccounts(out, reload_command=f"touch {hup}")
    again = a.apply_change(a.current, actor="adm", action="registry.device_add")
    assert again.broker == "updated" and "g-1" in again.passwords and hup.exists()
    assert "g-1" in CredentialsFile.load(out / CREDENTIALS).devices
    assert a.health()["broker_problem"] is None


def test_at_start_the_accounts_are_made_to_match_the_registry(
    admin: tuple[RegistryAdmin, list[str], AuthStore], tmp_path: Path
) -> None:
    a, _, store = admin
    out = tmp_path / "broker"
    write_credentials(a.current, out)
    a.apply(plus(a.current, GATE), actor="adm", action="registry.device_add")
    # the registry file was written, then the service stopped before the accounts were
    hup = tmp_path / "reloaded"
    a.broker = BrokerAccounts(out, reload_command=f"touch {hup}")
    applied = a.reconcile()
    assert applied is not None and applied.broker == "updated" and hup.exists()
    assert "g-1" in CredentialsFile.load(out / CREDENTIALS).devices
    (entry,), _ = AuditLog(store).page(action="registry.broker_accounts")
    assert entry.detail["broker_accounts_added"] == ["g-1"]
    hup.unlink()
    again = a.reconcile()  # nothing owed: the broker is told once more, no account changes
    assert again is not None and again.passwords == {} and hup.exists()
    assert AuditLog(store).page(action="registry.broker_accounts")[1] == 1
    # a broker that cannot be told at start: health says so until a retry succeeds
    a.broker = BrokerAccounts(out, reload_command="false")
    failed = a.reconcile()
    assert failed is not None and failed.broker == "failed"
    assert a.health()["broker_problem"] is not None


def test_a_broker_group_that_is_not_on_the_machine_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="no group 'no-such-group-xq'"):
        Settings(
            broker_accounts_dir=Path("/tmp/x"),
            broker_pid_file=Path("/run/m.pid"),
            broker_accounts_group="no-such-group-xq",
        )
    group = grp.getgrgid(os.getgid()).gr_name
    ok = Settings(
        broker_accounts_dir=Path("/tmp/x"),
        broker_pid_file=Path("/run/m.pid"),
        broker_accounts_group=group,
    )
    assert ok.broker_accounts_group == group


def test_a_refused_reload_is_audited_without_the_values_refused(
    admin: tuple[RegistryAdmin, list[str], AuthStore],
) -> None:
    a, _, store = admin
    source = a.files.source
    assert source is not None
    name = "王秀英奶奶住在三号楼五零一室她的女儿电话是13800138000请联系她的女儿谢谢大家关照"
    (source / "residents.yaml").write_text(
        f"- {{resident_id: r-1, building: B1, unit: 1-1, display_name: {name}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(RegistryError):
        a.reload(actor="mgr")
    (entry,), _ = AuditLog(store).page(action="registry.reload")
    assert entry.outcome == "refused"
    (problem,) = entry.detail["problems"]
    assert "residents.yaml line 1, field 'display_name'" in problem, problem
    assert "王" not in json.dumps(entry.detail, ensure_ascii=False) and "got" not in problem
    assert without_value("x.csv row 2, field 'thresholds': expected name=value, got 'hr:90'") == (
        "x.csv row 2, field 'thresholds': expected name=value"
    )
