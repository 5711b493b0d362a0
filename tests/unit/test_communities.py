"""Several communities in one installation, the pure parts: the setting, the registries loaded
together (an id in two of them refused with both files named), routing within the alert's own
community, the engine's community label, and who sees which community's alerts (in SQL and
one by one alike)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts import AlertStore
from alerts.model import Alert, Audience
from alerts.routing import Router
from ingest.profiles import shipped_profiles
from ingest.ways import WaysIn
from jiayuan.api.push import _not_its_own
from jiayuan.auth.scope import Principal, Scopes
from jiayuan.broker.accounts import write_credentials
from jiayuan.integrations import Integration
from jiayuan.registry_admin import RegistryAdmin
from jiayuan.registry_files import CommunityFiles, NotWritable
from jiayuan.settings import Settings
from registry import Building, Device, Registry, RegistryError, Resident, write_registry
from registry.communities import load_communities
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from simulators.fleet import build_fleet
from simulators.prefix import prefixed
from simulators.scenarios import build_scenario
from tests.alerting import T0, TZ, community, fire, staff


def other() -> Registry:
    """Community h: its own building hB01 in compound hC01, wearable, resident, caretaker,
    guard, and the district manager."""
    return Registry(
        "h",
        buildings=[Building(building="hB01", compound="hC01")],
        devices=[
            Device(device_id="h-wr-1", kind="wearable", compound="hC01", building="hB01",
                   unit="1-1-101", floor=1, resident_id="h-r-1"),
            Device(device_id="h-smk-1", kind="smoke", compound="hC01", building="hB01",
                   unit="1-1-101", floor=1),
        ],
        residents=[
            Resident(resident_id="h-r-1", building="hB01", unit="1-1-101", floor=1,
                     caretakers=("h-care-1",)),
        ],
        staff=[
            staff("h-care-1", "caretaker", buildings=("hB01",), compounds=("hC01",)),
            staff("h-sec-desk", "security"),
            staff("dm", "district_manager"),
        ],
    )  # fmt: skip


def both() -> Registry:
    return Registry.combine({"y": community(), "h": other()})


def test_the_setting_reads_community_registry_pairs_and_fails_fast(tmp_path: Path) -> None:
    s = Settings(communities=f"y={tmp_path / 'y'}, h={tmp_path / 'h'}")
    assert s.community_registries() == {"y": tmp_path / "y", "h": tmp_path / "h"}
    assert s.community == "y"  # the first, unless set
    one = Settings(registry=tmp_path / "y")
    assert one.community_registries() == {"y": tmp_path / "y"}  # as before
    for bad, why in [
        ("y", "<community>=<registry path>"),
        ("y=a,y=b", "listed twice"),
        ("y z=a", "bad community id"),
    ]:
        with pytest.raises(ValidationError, match=why):
            Settings(communities=bad)
    with pytest.raises(ValidationError, match="not both"):
        Settings(communities="y=a,h=b", registry=tmp_path)
    with pytest.raises(ValidationError, match="'q' is not one of"):
        Settings(communities="y=a,h=b", community="q")


def test_an_id_in_two_communities_is_refused_naming_both_files(tmp_path: Path) -> None:
    y, h = community(), other()
    h.devices["wr-1"] = y.devices["wr-1"]
    h.buildings["B01"], h.buildings["B02"] = y.buildings["B01"], y.buildings["B02"]
    h.residents["r-1"] = y.residents["r-1"]
    h.staff["care-1"] = y.staff["care-1"]
    h.staff["care-2"] = y.staff["care-2"]
    h.staff["care-night"] = y.staff["care-night"]
    write_registry(y, tmp_path / "y")
    write_registry(h, tmp_path / "h")
    with pytest.raises(RegistryError) as e:
        load_communities({"y": tmp_path / "y", "h": tmp_path / "h"})
    said = [str(p) for p in e.value.problems]
    assert any(
        "device 'wr-1' of community 'h' is also registered in community 'y'" in p
        and str(tmp_path / "h") in p
        and str(tmp_path / "y") in p
        for p in said
    ), said
    assert any("building 'B01'" in p for p in said) and any("compound 'C01'" in p for p in said)
    assert any("resident 'r-1'" in p for p in said) and any(
        "staff member 'care-1'" in p for p in said
    )
    # apart, they load; one community alone is the registry itself
    write_registry(other(), tmp_path / "h")
    loaded = load_communities({"y": tmp_path / "y", "h": tmp_path / "h"})
    assert list(loaded.parts) == ["y", "h"] and loaded.community == "y"
    assert loaded.community_of("h-wr-1") == "h" and loaded.community_of("wr-1") == "y"
    assert loaded.resident_community("h-r-1") == "h" and loaded.staff_community("dm") == "h"
    assert load_communities({"y": None}).parts.keys() == {"y"}


def alert(device_id: str, registry: Registry, route: str = "caretaker") -> Alert:
    d = registry.devices[device_id]
    return Alert(
        id=1, fingerprint=f"wearable_fall:{device_id}", rule_id="wearable_fall",
        device_id=device_id, kind=d.kind, severity="critical", signal="alarm",
        route=route,  # type: ignore[arg-type]
        summary="Fall detected", status="firing",
        labels={"community": registry.community_of(device_id) or "", "compound": d.compound,
                "building": d.building or "", "resident_id": d.resident_id or ""},
        started_at=T0, last_match_at=T0, raised_at=T0, updated_at=T0,
    )  # fmt: skip


def test_an_alert_is_routed_within_its_own_community() -> None:
    reg = both()
    router = Router(reg, TZ)
    noon = T0  # a weekday at noon: y's day caretakers are on duty
    h_fall = alert("h-wr-1", reg)
    assert [t.staff_id for t in router.resolve(["own_caretakers"], h_fall, noon)] == ["h-care-1"]
    # h's building caretaker is h's only
    assert {t.staff_id for t in router.resolve(["building_caretaker"], h_fall, noon)} <= {
        "h-care-1"
    }
    assert [t.staff_id for t in router.resolve(["security_desk"], h_fall, noon)] == ["h-sec-desk"]
    y_fall = alert("wr-1", reg)
    named = {t.staff_id for t in router.resolve(["own_caretakers", "security_desk"], y_fall, noon)}
    assert named and not any(s.startswith("h-") for s in named)
    stray = dataclasses.replace(y_fall, labels={"community": "q"})
    assert router.resolve(["own_caretakers", "security_desk"], stray, noon) == []


def test_the_engine_labels_each_device_with_its_registered_community() -> None:
    engine = RuleEngine(load_rules([builtin_pack()]), both(), tz=TZ)
    assert engine._labels("h-wr-1", "y")["community"] == "h"
    assert engine._labels("wr-1", "y")["community"] == "y"
    assert engine._labels("unknown-1", "h") == {"community": "h", "registered": "false"}
    single = RuleEngine(load_rules([builtin_pack()]), community(), tz=TZ)
    assert single._labels("wr-1", "x")["community"] == "x"  # one community: the topic's, as before


def test_staff_see_their_own_community_and_the_district_manager_every_one(tmp_path: Path) -> None:
    reg = both()
    scopes = Scopes(reg)
    mgr = scopes.of(Principal("mgr-1", "manager", "M", "token"))
    guard = scopes.of(Principal("h-sec-desk", "security", "G", "token"))
    dm = scopes.of(Principal("dm", "district_manager", "D", "token"))
    admin_token = scopes.of(Principal("admin-token", "admin", "A", "admin-token"))
    assert mgr.communities == frozenset({"y"}) and guard.communities == frozenset({"h"})
    assert dm.communities is None and admin_token.communities is None
    assert Scopes(community()).of(Principal("mgr-1", "manager", "M", "token")).communities is None

    store = AlertStore(tmp_path / "alerts.db")
    try:
        for t in (fire("smoke_alarm", "smk-101"), fire("smoke_alarm", "h-smk-1")):
            store.apply(
                dataclasses.replace(
                    t, labels={**t.labels, "community": reg.community_of(t.device_id) or ""}
                )
            )
        everything, _ = store.find()
        for scope, expected in [
            (mgr, {"smk-101"}),
            (guard, {"h-smk-1"}),
            (dm, {"smk-101", "h-smk-1"}),
        ]:
            found, total = store.find(audience=scope.audience)
            assert {a.device_id for a in found} == expected and total == len(expected)
            # one by one, the same answer as the listing's SQL
            assert {a.device_id for a in everything if store.admits(scope.audience, a)} == expected
        found, _ = store.find(audience=dm.audience, community="h")
        assert [a.device_id for a in found] == ["h-smk-1"]
        nobody = dataclasses.replace(dm.audience, communities=frozenset())
        assert store.find(audience=nobody) == ([], 0)
        assert Audience(everyone=True).restricts is False
    finally:
        store.close()


def test_the_demo_second_community_shares_no_id_with_the_first(tmp_path: Path) -> None:
    """``make demo COMMUNITIES=y,h``: h's fleet, its ids prefixed, loads beside y's, and what its
    simulator sends is on h's topics, of h's devices, with h's pages going to h's staff."""
    y = build_fleet(seed=1, devices=60)
    h = prefixed(build_fleet(seed=2, devices=60, community="h", notify="json://x/notify"), "h-")
    y.write(tmp_path / "y")
    h.write(tmp_path / "h")
    both = load_communities({"y": tmp_path / "y", "h": tmp_path / "h"})
    assert len(both.devices) == len(y.registry.devices) + len(h.registry.devices)
    assert all(s.device_id in h.registry.devices for s in h.sims.values())
    fall = build_scenario("fall", h, T0, random.Random(1))
    topics = {step.topic for step in fall.steps}
    assert topics and all(t.startswith("community/h/wearable/h-wr-") for t in topics)
    r = both.resident_of(fall.devices[0])
    assert r is not None and all(both.staff_community(c) == "h" for c in r.caretakers)
    assert all(c.endswith(f"/{s.staff_id}") for s in h.registry.staff.values() for c in s.channels)


def test_each_device_account_may_publish_under_its_own_community_only(tmp_path: Path) -> None:
    write_credentials(both(), tmp_path / "broker")
    acl = (tmp_path / "broker" / "acl").read_text()
    assert "user h-smk-1\ntopic write community/h/smoke/h-smk-1/+\n" in acl
    assert "user smk-101\ntopic write community/y/smoke/smk-101/+\n" in acl
    assert "community/y/smoke/h-smk-1" not in acl and "community/h/smoke/smk-101" not in acl


def test_a_reload_keeps_the_communities_apart_and_marks_a_new_wearer_in_its_files(
    tmp_path: Path,
) -> None:
    """``SIGHUP`` with several communities: h's wearable given to another resident is stamped
    (``assigned_since``) in h's own files and the communities stay apart; a change through the
    API is refused (edit the files); a reload that would put one id in both is refused and the
    running registry stays."""
    y, h = community(), other()
    write_registry(y, tmp_path / "y")
    write_registry(h, tmp_path / "h")
    files = CommunityFiles({"y": tmp_path / "y", "h": tmp_path / "h"})
    admin = RegistryAdmin(files.read(), files)
    h.residents["h-r-2"] = h.residents["h-r-1"].model_copy(update={"resident_id": "h-r-2"})
    h.devices["h-wr-1"] = h.devices["h-wr-1"].model_copy(update={"resident_id": "h-r-2"})
    write_registry(h, tmp_path / "h")
    admin.reload(actor="test")
    now = admin.current
    assert list(now.parts) == ["y", "h"] and now.community_of("h-wr-1") == "h"
    assert now.devices["h-wr-1"].assigned_since is not None
    again = load_communities({"y": tmp_path / "y", "h": tmp_path / "h"})
    assert again.devices["h-wr-1"].assigned_since == now.devices["h-wr-1"].assigned_since

    def rename(r: Registry) -> Registry:  # what a change through the API builds
        named = [d.model_copy(update={"name": "x"}) for d in r.devices.values()]
        return Registry(r.community, list(r.buildings.values()), named,
                        list(r.residents.values()), list(r.staff.values()))  # fmt: skip

    with pytest.raises(NotWritable, match="several communities"):
        admin.edit(rename, actor="test", action="registry.change")
    assert admin.current is now
    h.devices["smk-101"] = y.devices["smk-101"]
    h.buildings["B01"] = y.buildings["B01"]
    write_registry(h, tmp_path / "h")
    with pytest.raises(RegistryError, match="device 'smk-101'"):
        admin.reload(actor="test")
    assert admin.current is now


def test_a_bridge_or_a_platform_reports_each_device_in_its_own_community() -> None:
    """Vendor profiles and HTTP pushes of an installation of several communities: a device is
    placed in the community whose registry lists it (a Zigbee bridge may carry devices of
    both); an unregistered one in the installation's first, as before."""
    ways = WaysIn(both())
    profiles = shipped_profiles("y")
    profiles.place_by(ways.community_of)
    smoke = profiles.get("z2m_smoke")
    assert smoke is not None
    body = json.dumps({"smoke": True, "battery": 97}).encode()
    topics = {c.topic for c in smoke.from_mqtt("zigbee2mqtt/smoke/h-smk-1", body)}
    assert topics == {"community/h/smoke/h-smk-1/telemetry", "community/h/smoke/h-smk-1/event"}
    new = {c.topic for c in smoke.from_mqtt("zigbee2mqtt/smoke/sd-new", body)}
    assert new == {"community/y/smoke/sd-new/telemetry", "community/y/smoke/sd-new/event"}
    # a registry change moves the device with it: the hook reads the registry of the moment
    ways.set_registry(community())  # h's registry gone
    assert ways.community_of("h-smk-1") is None
    assert {c.topic for c in smoke.from_mqtt("zigbee2mqtt/smoke/h-smk-1", body)} >= {
        "community/y/smoke/h-smk-1/telemetry"
    }

    # an HTTP push: each device in its own community; naming another is refused, said why
    h = other()
    h.devices["h-wr-1"] = h.devices["h-wr-1"].model_copy(update={"via": "nb-platform"})
    ways = WaysIn(Registry.combine({"y": community(), "h": h}))
    platform = Integration(id="nb-platform", devices=["*"])
    assert _not_its_own(platform, "y", ways, "h", "h-wr-1") is None
    assert _not_its_own(platform, "y", ways, "y", "h-wr-1") == (
        "device h-wr-1 is registered in community 'h', not 'y'"
    )
    assert _not_its_own(platform, "y", ways, "q", "h-wr-1") == "community 'q' is not this service's"
    # one community: as before
    one = WaysIn(community())
    assert _not_its_own(platform, "y", one, "h", "x-1") == "community 'h' is not this service's"
