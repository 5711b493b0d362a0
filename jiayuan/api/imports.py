"""``POST /api/registry/import``: a community's spreadsheet (``.xlsx``, ``.csv``) or registry
YAML, previewed as a diff against the running registry, applied only when asked again with the
version the preview named (admins and managers; the apply is audited with its diff). A
manager's import may not change staff records an admin keeps (see
:func:`~jiayuan.api.registry_changes.staff_refusal`): the apply is refused (403).

The body is the file itself (``?name=`` is its file name: ``devices.csv`` says the section;
a workbook has a sheet per section). The sections the file gives replace the running ones; the
others are kept, and the whole is checked as the loader checks files (422 lists the problems
with their file, sheet, row and field: the first hundred, and how many more). The preview
answers ``version``, which names both the running registry and what the file makes of it:
``?apply=<version>`` applies that — and only that: if the registry changed since (another
change, a reload) or the file is not the one previewed, 409, and nothing is applied.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Final, NoReturn

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import BaseModel, Field

from jiayuan.api.deps import AuthDep, CtxDep, IpDep, PrincipalDep, allow
from jiayuan.api.registry_changes import (
    IN_TURN,
    BrokerOut,
    _admin,
    check_staff,
    listed,
    refused,
)
from jiayuan.registry_files import NotWritable
from registry import Registry, RegistryError, load_registry
from registry.diff import RegistryDiff, diff, digest

PATH: Final = "/api/registry/import"
MAX_BODY: Final = 8 << 20
"""An import's body cap (the app's default is smaller): a district's workbook fits."""
ACTION: Final = "registry.import"
FILE_NAME: Final = r"^[^/\\\x00-\x1f\x7f]{1,100}\.(csv|xlsx|yaml|yml|CSV|XLSX|YAML|YML)$"
"""A file name, no path: it names the section of a CSV file, and the file in problems."""

router = APIRouter(tags=["registry"], dependencies=[allow("admin", "manager", "district_manager")])


class ImportOut(BaseModel):
    file: str
    version: str = Field(
        description="Names the running registry and what this file makes of it: send it back"
        " as `apply` to apply exactly this diff."
    )
    applied: bool
    changes: str = Field(description="Counts per section, e.g. `devices +1 -0 ~2`.")
    diff: RegistryDiff
    text: str = Field(description="The diff as the command line prints it.")
    broker: BrokerOut | None = Field(
        default=None, description="When applied: what became of the broker's accounts."
    )
    superseded: list[str] = Field(default_factory=list)


class Stale(Exception):
    """The registry is no longer the one the preview was made against."""


def version_of(old: Registry, new: Registry) -> str:
    return f"{digest(old)}.{digest(new)}"


def imported(current: Registry, name: str, body: bytes) -> Registry:
    """``current`` with what the file ``name`` holding ``body`` gives (raises RegistryError)."""
    with tempfile.TemporaryDirectory(prefix="jiayuan-import-") as d:
        path = Path(d) / name
        path.write_bytes(body)
        try:
            return load_registry(path, community=current.community, base=current)
        except RegistryError as e:
            # the problems name the file as it was sent, not where it was put meanwhile
            raise RegistryError(
                [type(p)(p.file.replace(f"{d}/", ""), p.row, p.field, p.message, p.unit)
                 for p in e.problems]
            ) from e  # fmt: skip


@router.post(
    PATH,
    response_model=ImportOut,
    summary="Preview or apply a registry import",
    dependencies=[IN_TURN],
    responses={
        409: {"description": "`apply` names a version that is no longer the one the file makes"},
        422: {"description": "The file has problems (each with its file, sheet, row, field)"},
    },
)
def post_registry_import(
    ctx: CtxDep,
    auth: AuthDep,
    who: PrincipalDep,
    ip: IpDep,
    body: Annotated[bytes, Body(media_type="application/octet-stream")],
    name: Annotated[
        str,
        Query(
            pattern=FILE_NAME,
            description="The file's name: `devices.csv` (the section), `registry.xlsx` …",
        ),
    ],
    apply: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9a-f]{16}\.[0-9a-f]{16}$",
            description="The `version` a preview answered: apply that diff.",
        ),
    ] = None,
) -> ImportOut:
    admin = _admin(ctx)
    base = admin.current
    try:
        new = imported(base, name, body)
    except RegistryError as e:
        detail = {"message": "the file has problems", "problems": listed(e.problems)}
        raise HTTPException(422, detail) from e
    version = version_of(base, new)
    if apply is None:
        change = diff(base, new)
        return ImportOut(
            file=name,
            version=version,
            applied=False,
            changes=change.summary(),
            diff=change,
            text=change.text(),
        )
    if apply != version:
        _refuse_stale(auth, who.id, ip, name)

    def edit(current: Registry) -> Registry:
        if digest(current) != digest(base):
            raise Stale
        try:
            check_staff(who, current, new)
        except HTTPException as e:
            refused(admin, who, ip, ACTION, name, str(e.detail))
            raise
        return new

    try:
        applied = admin.edit(edit, actor=who.id, action=ACTION, ip=ip, target=name)
    except Stale:
        _refuse_stale(auth, who.id, ip, name)
    except (RegistryError, NotWritable) as e:
        problems = listed(e.problems) if isinstance(e, RegistryError) else [str(e)]
        raise HTTPException(409, {"message": "not applied", "problems": problems}) from e
    return ImportOut(
        file=name,
        version=version,
        applied=True,
        changes=applied.diff.summary(),
        diff=applied.diff,
        text=applied.diff.text(),
        broker=BrokerOut(
            accounts=applied.broker, detail=applied.broker_detail, passwords=applied.passwords
        ),
        superseded=applied.superseded,
    )


_STALE: Final = (
    "the registry changed since this preview, or the file is not the one previewed:"
    " preview it again and apply what that shows"
)


def _refuse_stale(auth: AuthDep, actor: str, ip: str, name: str) -> NoReturn:
    auth.audit.record(actor, ACTION, target=name, outcome="refused", ip=ip, problems=[_STALE])
    raise HTTPException(409, _STALE)
