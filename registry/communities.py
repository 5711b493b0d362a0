"""Several communities in one installation: each community's registry loaded from its own
files, and the checks that keep them apart (docs/communities.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from registry.loader import Problem, RegistryError, load_registry
from registry.models import Registry

_KEPT_APART = (
    ("devices", "device"),
    ("residents", "resident"),
    ("staff", "staff member"),
    ("buildings", "building"),
    ("compounds", "compound"),
)
"""Ids that name one thing in the whole installation: a device's topic, a resident's alerts
and a staff member's sign-in and pages must never be another community's; and a place's —
alerts of one building are one incident (a fire), listings filter by building, and a
compound's gateway has one broker account — so buildings and compounds are kept apart too."""


def load_communities(sources: Mapping[str, Path | None]) -> Registry:
    """Every community's registry (a path of None: an empty one), combined; raises
    :class:`RegistryError` listing every problem of every file, and every id registered in two
    communities with both files named."""
    parts: dict[str, Registry] = {}
    problems: list[Problem] = []
    for community, path in sources.items():
        if path is None:
            parts[community] = Registry(community)
            continue
        try:
            parts[community] = load_registry(path, community=community)
        except RegistryError as e:
            problems.extend(e.problems)
    problems += overlaps(parts, sources)
    if problems:
        raise RegistryError(problems)
    return Registry.combine(parts)


def overlaps(parts: Mapping[str, Registry], sources: Mapping[str, Path | None]) -> list[Problem]:
    """A problem for every device, resident or staff id registered in two communities."""
    out: list[Problem] = []
    for section, what in _KEPT_APART:
        first: dict[str, str] = {}
        for community, registry in parts.items():
            for key in _ids(registry, section):
                other = first.setdefault(key, community)
                if other == community:
                    continue
                out.append(
                    Problem(
                        str(sources[community]),
                        None,
                        None,
                        f"{what} {key!r} of community {community!r} is also registered in"
                        f" community {other!r} ({sources[other]}): ids must be unique across"
                        " the installation",
                    )
                )
    return out


def _ids(registry: Registry, section: str) -> list[str]:
    if section != "compounds":
        return list(getattr(registry, section))
    compounds = {b.compound for b in registry.buildings.values()}
    return sorted(compounds | {d.compound for d in registry.devices.values()})
