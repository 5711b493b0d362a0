"""What changes between two registries: per section the ids added, removed and changed, with
each changed field's value before and after.

A :class:`RegistryDiff` is pure data (pydantic, JSON-able): the import preview shows it, an
applied change returns it and the audit records it. Values are in the form the registry files
use (``model_dump(mode="json")``, shifts as ``Mon-Fri 08:00-20:00@B03`` where that reads back
the same), so :func:`patch` rebuilds the new registry from the old one and the diff.

A diff of residents holds what their records hold (display names, thresholds, areas): show it
to the staff who may see the registry, never log it — :meth:`RegistryDiff.summary` is the
loggable form (counts only), :meth:`RegistryDiff.redacted` the one to keep in the audit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from registry.cells import format_shift, normalise
from registry.models import Building, Device, Registry, Resident, Staff

SECTIONS: Final = ("buildings", "devices", "residents", "staff")
_MODELS: Final[dict[str, type[BaseModel]]] = {
    "buildings": Building,
    "devices": Device,
    "residents": Resident,
    "staff": Staff,
}
_SINGULAR: Final = {
    "buildings": "building",
    "devices": "device",
    "residents": "resident",
    "staff": "staff",
}
PERSONAL: Final[dict[str, frozenset[str]]] = {
    "residents": frozenset({"display_name", "thresholds", "allowed_area"}),
    "staff": frozenset({"name", "channels"}),
}
"""Fields whose values say who a resident is, where they live or what their body does, and a
staff member's name and notification channels (apprise URLs may hold tokens and passwords): a
redacted diff names them as changed, never with their values."""
WITHHELD: Final = "(withheld)"
_SHOWN: Final = 60
"""Characters of a value the text form shows."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldChange(_Data):
    field: str
    before: Any = None
    after: Any = None


class ChangedRecord(_Data):
    id: str
    fields: list[FieldChange]


class SectionDiff(_Data):
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: list[ChangedRecord] = Field(default_factory=list)
    added_records: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Each added record's fields that are not defaults, by id."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


class RegistryDiff(_Data):
    buildings: SectionDiff = Field(default_factory=SectionDiff)
    devices: SectionDiff = Field(default_factory=SectionDiff)
    residents: SectionDiff = Field(default_factory=SectionDiff)
    staff: SectionDiff = Field(default_factory=SectionDiff)

    def section(self, name: str) -> SectionDiff:
        if name not in SECTIONS:
            raise KeyError(name)
        value: SectionDiff = getattr(self, name)
        return value

    @property
    def empty(self) -> bool:
        return all(self.section(s).empty for s in SECTIONS)

    def redacted(self) -> RegistryDiff:
        """The same diff with the values of :data:`PERSONAL` fields replaced by ``(withheld)``:
        what the audit keeps (who changed which field of whom, not a resident's name)."""
        sections: dict[str, SectionDiff] = {}
        for s in SECTIONS:
            d, hidden = self.section(s), PERSONAL.get(s, frozenset())
            if not hidden or d.empty:
                sections[s] = d
                continue
            sections[s] = SectionDiff(
                added=d.added,
                removed=d.removed,
                changed=[
                    ChangedRecord(
                        id=c.id,
                        fields=[
                            FieldChange(field=f.field, before=WITHHELD, after=WITHHELD)
                            if f.field in hidden
                            else f
                            for f in c.fields
                        ],
                    )
                    for c in d.changed
                ],
                added_records={
                    rid: {k: WITHHELD if k in hidden else v for k, v in rec.items()}
                    for rid, rec in d.added_records.items()
                },
            )
        return RegistryDiff(**sections)

    def summary(self) -> str:
        """Counts only, e.g. ``devices +2 -0 ~1; staff +0 -0 ~1`` (safe to log)."""
        parts = [
            f"{s} +{len(d.added)} -{len(d.removed)} ~{len(d.changed)}"
            for s in SECTIONS
            if not (d := self.section(s)).empty
        ]
        return "; ".join(parts) or "no changes"

    def text(self) -> str:
        """The readable form the CLI prints: one line per record, one per changed field."""
        if self.empty:
            return "no changes"
        lines: list[str] = []
        for s in SECTIONS:
            d = self.section(s)
            if d.empty:
                continue
            lines.append(
                f"{s}: {len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed"
            )
            one = _SINGULAR[s]
            for rid in d.added:
                fields = d.added_records.get(rid, {})
                shown = ", ".join(f"{k}={_show(v)}" for k, v in fields.items() if v != rid)
                lines.append(f"  + {one} {rid}" + (f" ({shown})" if shown else ""))
            lines += [f"  - {one} {rid}" for rid in d.removed]
            for c in d.changed:
                lines.append(f"  ~ {one} {c.id}")
                lines += [
                    f"      {f.field}: {_show(f.before)} -> {_show(f.after)}" for f in c.fields
                ]
        return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def record_values(record: BaseModel) -> dict[str, Any]:
    """A record's fields in the registry files' form (JSON values; shifts as one-liners)."""
    data = record.model_dump(mode="json")
    if isinstance(record, Staff):
        data["shifts"] = [
            format_shift(s) or s.model_dump(mode="json", exclude_defaults=True)
            for s in record.shifts
        ]
    return data


def _records(registry: Registry, section: str) -> dict[str, BaseModel]:
    records: dict[str, BaseModel] = getattr(registry, section)
    return records


def diff(old: Registry, new: Registry) -> RegistryDiff:
    """What turns ``old`` into ``new``; ids in sorted order, fields in the model's order."""
    sections: dict[str, SectionDiff] = {}
    for s in SECTIONS:
        before, after = _records(old, s), _records(new, s)
        added = sorted(after.keys() - before.keys())
        changed: list[ChangedRecord] = []
        for rid in sorted(before.keys() & after.keys()):
            if before[rid] == after[rid]:
                continue
            a, b = record_values(before[rid]), record_values(after[rid])
            fields = [
                FieldChange(field=name, before=a[name], after=b[name])
                for name in a
                if a[name] != b[name]
            ]
            if fields:
                changed.append(ChangedRecord(id=rid, fields=fields))
        sections[s] = SectionDiff(
            added=added,
            removed=sorted(before.keys() - after.keys()),
            changed=changed,
            added_records={rid: _set_fields(after[rid]) for rid in added},
        )
    return RegistryDiff(**sections)


def _set_fields(record: BaseModel) -> dict[str, Any]:
    """The record's fields that are not defaults (the key field always)."""
    values = record_values(record)
    return {k: values[k] for k in record.model_dump(exclude_defaults=True)}


def patch(old: Registry, change: RegistryDiff) -> Registry:
    """``old`` with ``change`` applied: ``patch(a, diff(a, b))`` has the records of ``b``.

    Raises ``KeyError`` when a removed or changed id is not in ``old``, ``ValueError`` (a
    pydantic ``ValidationError``) when a changed value is not valid for its field."""
    sections: dict[str, list[Any]] = {}
    for s in SECTIONS:
        d, model = change.section(s), _MODELS[s]
        records = dict(_records(old, s))
        for rid in d.removed:
            del records[rid]
        for c in d.changed:
            data = record_values(records[rid := c.id])
            for f in c.fields:
                data[f.field] = f.after
            records[rid] = model.model_validate(normalise(data))
        for rid in d.added:
            records[rid] = model.model_validate(normalise(d.added_records[rid]))
        sections[s] = list(records.values())
    return Registry(old.community, **sections)


def digest(registry: Registry) -> str:
    """A short hash of every record: two registries with the same records have the same one.

    What the import preview names, so a diff is applied only to the registry it was made
    against."""
    body = {
        s: {rid: record_values(r) for rid, r in sorted(_records(registry, s).items())}
        for s in SECTIONS
    }
    text = json.dumps([registry.community, body], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
