"""Where the running registry is kept: the registry directory (``JIAYUAN_REGISTRY``), written so
that a restart or a file reload reads back exactly the registry the service runs.

A change is written as ``buildings/devices/residents/staff.yaml`` (:func:`write_registry`,
each file 0600 or the mode of the one it replaces), under the directory's lock: first into
``.staging/``, read back there with :func:`load_registry` (the same checks a restart makes),
then committed and moved into place all together (:mod:`registry.staging`: a writer killed
halfway leaves a change that the next reader finishes, never a mix of old and new files). Other
registry files the loader would also read there — spreadsheets (``devices.csv``), one
``registry.yaml`` — would then say something else, so the same commit moves them into
``superseded/`` beside them, named with the time they were replaced.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from registry import Problem, Registry, RegistryError, load_registry, write_registry
from registry.communities import overlaps
from registry.loader import SECTIONS
from registry.staging import STAGING, SUPERSEDED, commit, finish, fresh_staging, locked, settle

__all__ = ["STAGING", "SUPERSEDED", "NotWritable", "RegistryFiles"]
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
        if self.source.is_dir():
            with contextlib.suppress(OSError, ValueError):  # load_registry says why
                settle(self.source)  # before the stamp: finishing a change changes the files
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
        written = [f"{section}.yaml" for section in SECTIONS]
        with locked(directory):
            finish(directory)  # a change a killed writer committed comes first
            if self._seen is not None and self._stamp() != self._seen:
                raise NotWritable(
                    f"the registry files in {directory} were edited since they were read:"
                    " reload them first (POST /api/registry/reload or SIGHUP), or this change"
                    " would overwrite the edit"
                )
            staging = fresh_staging(directory)
            try:
                write_registry(registry, staging, modes_of=directory)
                back = load_registry(staging, community=self.community)
                if _records(back) != _records(registry):
                    raise RuntimeError("the registry written does not read back the same")
            except BaseException as e:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(e, RegistryError):
                    raise RegistryError([_unstaged(p) for p in e.problems]) from e
                raise
            aside = [
                f.name
                for f in sorted(directory.iterdir())
                if f.is_file() and f.name.lower() in _REGISTRY_FILE and f.name not in written
            ]
            superseded = commit(directory, written, aside)
        self._seen = self._stamp()
        return superseded


def _unstaged(p: Problem) -> Problem:
    return Problem(p.file.replace(f"/{STAGING}/", "/"), p.row, p.field, p.message, p.unit)


def _records(r: Registry) -> tuple[object, ...]:
    return (r.buildings, r.devices, r.residents, r.staff)


class CommunityFiles(RegistryFiles):
    """The registries of several communities (``JIAYUAN_COMMUNITIES``), read together: a reload
    reads them all and refuses a set in which one id is registered twice. Changes through the
    API are not written (each community's files are edited and reloaded); what the service
    itself marks in a community's records (a wearable's new wearer, see
    :func:`registry.assignments.stamp_assignments`) is written into that community's directory."""

    def __init__(self, sources: Mapping[str, Path | None]) -> None:
        super().__init__(None, next(iter(sources)))
        self.sources = dict(sources)
        self._files = {c: RegistryFiles(s, c) for c, s in sources.items()}
        self._read: dict[str, Registry] = {}

    @property
    def not_writable(self) -> str | None:
        return (
            "several communities (JIAYUAN_COMMUNITIES): changes through the API are not"
            " written; edit the community's registry files and reload them"
        )

    def read(self) -> Registry:
        parts: dict[str, Registry] = {}
        problems: list[Problem] = []
        for c, files in self._files.items():
            try:
                parts[c] = files.read() if files.source is not None else Registry(c)
            except RegistryError as e:
                problems.extend(e.problems)
        problems += overlaps(parts, self.sources)
        if problems:
            raise RegistryError(problems)
        self._read = parts
        return Registry.combine(parts)

    def write(self, registry: Registry) -> list[str]:
        """Each community's records that changed since read, into its own directory; a registry
        not made of the same communities (a change through the API) is :class:`NotWritable`."""
        if list(registry.parts) != list(self.sources):
            raise NotWritable(self.not_writable)
        superseded: list[str] = []
        for c, part in registry.parts.items():
            before = self._read.get(c)
            if before is None or _records(before) != _records(part):
                superseded += self._files[c].write(part)
        self._read = dict(registry.parts)
        return superseded


def registry_files(sources: Mapping[str, Path | None]) -> tuple[RegistryFiles, Registry]:
    """Where the installation's registry is kept, and the registry read from there now (an
    empty one for a single community without files)."""
    if len(sources) > 1:
        files: RegistryFiles = CommunityFiles(sources)
        return files, files.read()
    ((community, source),) = sources.items()
    files = RegistryFiles(source, community)
    return files, files.read() if source is not None else Registry(community)
