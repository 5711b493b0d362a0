"""The registry directory survives a writer killed halfway and a power cut, and keeps what it
holds (notification tokens, names, home coordinates) from other users of the machine."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from jiayuan.registry_files import STAGING, SUPERSEDED, RegistryFiles
from registry import (
    Building,
    Device,
    Registry,
    RegistryError,
    Resident,
    Staff,
    load_registry,
    write_registry,
)
from registry.staging import COMMIT, locked

B = Building(building="B01", compound="C01")
CARE = Staff(staff_id="care-1", name="C", role="caretaker", channels=("tgram://BOTTOKEN/123",))
R1 = Resident(resident_id="r-1", building="B01", unit="1-1", caretakers=("care-1",))


def old() -> Registry:
    return Registry("y", buildings=[B], staff=[CARE], residents=[R1])


def new() -> Registry:
    """An import that adds a resident, her wearable and her caretaker: with only some of its
    files in place, the registry is refused (or names a caretaker nobody made)."""
    care2 = Staff(staff_id="care-2", name="D", role="caretaker")
    r2 = Resident(resident_id="r-2", building="B01", unit="1-2", caretakers=("care-2",))
    wr2 = Device(device_id="wr-2", kind="wearable", compound="C01", building="B01", unit="1-2",
                 resident_id="r-2")  # fmt: skip
    return Registry("y", buildings=[B], staff=[CARE, care2], residents=[R1, r2], devices=[wr2])


def records(r: Registry) -> tuple[object, ...]:
    return (r.buildings, r.devices, r.residents, r.staff)


def killed_after_moves(
    monkeypatch: pytest.MonkeyPatch, d: Path, moves: int
) -> Callable[[str | Path, str | Path], None]:
    """``os.replace`` that fails (as if the process were killed there) once the change is
    committed and ``moves`` files were moved."""
    real = os.replace
    done = [0]

    def replace(src: str | Path, dst: str | Path) -> None:
        if (d / STAGING / COMMIT).exists():
            if done[0] == moves:
                raise KeyboardInterrupt("killed")
            done[0] += 1
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return real


@pytest.mark.parametrize("moves", [0, 2, 3])
def test_a_writer_killed_while_moving_files_leaves_the_new_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moves: int
) -> None:
    d = tmp_path / "registry"
    write_registry(old(), d)
    (d / "notes.csv").write_text("not registry\n")  # left alone
    files = RegistryFiles(d, "y")
    files.read()
    real = killed_after_moves(monkeypatch, d, moves)
    with pytest.raises(KeyboardInterrupt):
        files.write(new())
    monkeypatch.setattr(os, "replace", real)
    # the service starting again, or any reader of the directory, finishes the change
    assert records(load_registry(d, community="y")) == records(new())
    assert records(RegistryFiles(d, "y").read()) == records(new())
    assert not (d / STAGING).exists()


def test_a_killed_writer_finishes_moving_spreadsheets_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "registry"
    d.mkdir()
    (d / "buildings.csv").write_text("building,compound\nB01,C01\n")
    (d / "devices.csv").write_text(
        "device_id,kind,compound,building,unit\nsd-1,smoke,C01,B01,1-1\n"
    )
    files = RegistryFiles(d, "y")
    current = files.read()
    changed = Registry("y", buildings=[B], devices=[*current.devices.values()], staff=[CARE])
    real = killed_after_moves(monkeypatch, d, len(("buildings", "devices", "residents", "staff")))
    with pytest.raises(KeyboardInterrupt):
        files.write(changed)  # every yaml moved in, killed before the spreadsheets moved aside
    monkeypatch.setattr(os, "replace", real)
    assert records(RegistryFiles(d, "y").read()) == records(changed)
    assert sorted(f.name for f in d.iterdir() if f.is_file()) == [
        "buildings.yaml", "devices.yaml", "residents.yaml", "staff.yaml",
    ]  # fmt: skip
    assert sorted(f.name.split("-", 1)[1] for f in (d / SUPERSEDED).iterdir()) == [
        "buildings.csv", "devices.csv",
    ]  # fmt: skip


def test_a_change_never_committed_is_ignored(tmp_path: Path) -> None:
    d = tmp_path / "registry"
    write_registry(old(), d)
    write_registry(new(), d / STAGING)  # written, killed before the marker
    (d / STAGING / "devices.yaml").write_bytes(b"- {device_id: wr-")  # and one cut short
    assert records(load_registry(d, community="y")) == records(old())
    files = RegistryFiles(d, "y")
    assert records(files.read()) == records(old())
    files.write(new())  # the next change clears it
    assert records(load_registry(d, community="y")) == records(new())
    assert not (d / STAGING).exists()


def test_the_import_and_the_service_take_turns(tmp_path: Path) -> None:
    d = tmp_path / "registry"
    write_registry(old(), d)
    files = RegistryFiles(d, "y")
    files.read()
    done = threading.Event()

    def write() -> None:
        files.write(new())
        done.set()

    with locked(d):  # another process (jiayuan registry import) writing
        t = threading.Thread(target=write)
        t.start()
        assert not done.wait(0.5)
        assert not (d / STAGING).exists()
    t.join(30)
    assert done.is_set()
    assert records(load_registry(d, community="y")) == records(new())


def test_registry_files_stay_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        d = tmp_path / "registry"
        write_registry(old(), d)
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in d.iterdir()} == {
            f"{s}.yaml": 0o600 for s in ("buildings", "devices", "residents", "staff")
        }
        (d / "residents.yaml").chmod(0o640)  # given to the staff CLI's group by its owner
        files = RegistryFiles(d, "y")
        files.read()
        seen: list[int] = []
        real = write_registry.__globals__["write_file"]

        def spy(path: Path, text: str, mode: int = 0o600) -> None:
            seen.append(stat.S_IMODE(path.parent.stat().st_mode))
            real(path, text, mode)

        with pytest.MonkeyPatch.context() as m:
            m.setitem(write_registry.__globals__, "write_file", spy)
            files.write(new())
        assert seen and set(seen) == {0o700}  # .staging
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in d.iterdir()}
        assert modes == {"buildings.yaml": 0o600, "devices.yaml": 0o600,
                         "residents.yaml": 0o640, "staff.yaml": 0o600}  # fmt: skip
    finally:
        os.umask(previous)


def test_each_file_reaches_the_disk_before_it_replaces_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "registry"
    write_registry(old(), d)
    files = RegistryFiles(d, "y")
    files.read()
    synced: list[str] = []
    synced_files: set[int] = set()  # inodes
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        synced_files.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append((str(src), str(dst)))
        assert os.stat(src).st_ino in synced_files, f"{src} renamed before it was synced"
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    files.write(new())
    moved_in = [(s, t) for s, t in events if Path(t).parent == d]
    assert len(moved_in) == 4
    assert synced[-1] in (str(d), str(d / STAGING))  # the renames themselves synced
    assert str(d) in synced


def test_an_empty_section_file_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    d = tmp_path / "registry"
    write_registry(new(), d)
    (d / "devices.yaml").write_bytes(b"")  # a power cut after the rename, before the data
    with pytest.raises(RegistryError) as e:
        load_registry(d, community="y")
    (p,) = e.value.problems
    assert p.file == str(d / "devices.yaml") and "empty file" in p.message
