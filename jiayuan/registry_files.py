"""Where the running registry is kept: the registry directory (``JIAYUAN_REGISTRY``), written so
that a restart or a file reload reads back exactly the registry the service runs.

A change is written as ``buildings/devices/residents/staff.yaml`` (:func:`write_registry`):
first into a staging folder, read back there with :func:`load_registry` (the same checks a
restart makes), and only then moved into place one file at a time (``os.replace``: a reader sees
the old file or the new one, never half). Other registry files the loader would also read there
— spreadsheets (``devices.csv``), one ``registry.yaml`` — would then say something else, so they
are moved into ``superseded/`` beside them, named with the time they were replaced.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Final

from registry import Problem, Registry, RegistryError, load_registry, write_registry
from registry.loader import SECTIONS

STAGING: Final = ".staging"
SUPERSEDED: Final = "superseded"
_REGISTRY_FILE: Final = {
    f"{s}.{x}" for s in (*SECTIONS, "registry") for x in ("yaml", "yml", "csv", "xlsx")
}


class NotWritable(RuntimeError):
    """The registry is not kept where a change can be written (no ``JIAYUAN_REGISTRY``, or it
    names one file rather than a directory)."""


class RegistryFiles:
    def __init__(self, source: Path | None, community: str) -> None:
        self.source = source
        self.community = community
        self._seen: frozenset[tuple[str, int, int]] | None = None
        """The registry files (name, mtime, size) as last read or written: a change through the
        API refuses to overwrite files edited since (reload them first)."""

    def _stamp(self) -> frozenset[tuple[str, int, int]]:
        if self.source is None or not self.source.is_dir():
            return frozenset()
        return frozenset(
            (f.name, st.st_mtime_ns, st.st_size)
            for f in self.source.iterdir()
            if f.name.lower() in _REGISTRY_FILE and f.is_file() and (st := f.stat())
        )

    @property
    def not_writable(self) -> str | None:
        """Why changes cannot be written, or None."""
        if self.source is None:
            return (
                "JIAYUAN_REGISTRY is not set: the service runs an empty registry and has nowhere"
                " to keep a change; set it to a directory"
            )
        if not self.source.is_dir():
            return (
                f"JIAYUAN_REGISTRY names the file {self.source}: changes are written as"
                " buildings/devices/residents/staff.yaml in a registry directory; point it at one"
            )
        return None

    def read(self) -> Registry:
        """The registry as the files say now (raises :class:`RegistryError`)."""
        if self.source is None:
            raise NotWritable(self.not_writable)
        stamp = self._stamp()
        registry = load_registry(self.source, community=self.community)
        self._seen = stamp
        return registry

    def write(self, registry: Registry) -> list[str]:
        """Write ``registry`` into the directory (see the module); the names of the files moved
        to ``superseded/``. Raises :class:`NotWritable`, :class:`RegistryError` when what was
        written does not read back the same (nothing moved into place then), ``OSError``."""
        why = self.not_writable
        if why is not None:
            raise NotWritable(why)
        assert self.source is not None
        directory = self.source
        if self._seen is not None and self._stamp() != self._seen:
            raise NotWritable(
                f"the registry files in {directory} were edited since they were read: reload"
                " them first (POST /api/registry/reload or SIGHUP), or this change would"
                " overwrite the edit"
            )
        staging = directory / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        try:
            write_registry(registry, staging)
            back = load_registry(staging, community=self.community)
            if _records(back) != _records(registry):
                raise RuntimeError("the registry written does not read back the same")
            for section in SECTIONS:
                os.replace(staging / f"{section}.yaml", directory / f"{section}.yaml")
        except RegistryError as e:
            raise RegistryError(
                [Problem(p.file.replace(f"/{STAGING}/", "/"), p.row, p.field, p.message, p.unit)
                 for p in e.problems]
            ) from e  # fmt: skip
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _sync_dir(directory)
        superseded = self._supersede(directory)
        self._seen = self._stamp()
        return superseded

    def _supersede(self, directory: Path) -> list[str]:
        written = {f"{s}.yaml" for s in SECTIONS}
        others = [
            f
            for f in sorted(directory.iterdir())
            if f.is_file() and f.name.lower() in _REGISTRY_FILE and f.name not in written
        ]
        if not others:
            return []
        aside = directory / SUPERSEDED
        aside.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for f in others:
            os.replace(f, aside / f"{stamp}-{f.name}")
        _sync_dir(directory)
        return [f.name for f in others]


def _records(r: Registry) -> tuple[object, ...]:
    return (r.buildings, r.devices, r.residents, r.staff)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
