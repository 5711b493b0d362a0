"""Push integrations: the device platforms allowed to push (``JIAYUAN_INTEGRATIONS``, a YAML
file) and their tokens (issued by ``jiayuan push token NAME``, kept only as digests).

The file names each platform, the profile that maps its bodies and an optional note::

    integrations:
      - id: ctwing
        profile: native
        note: China Telecom AEP, NB-IoT smoke detectors of compounds 3-5
        devices: ["smk-c3-*", "smk-c4-*", "smk-c5-*"]   # required: whom it speaks for

A token is 256 random bits shown once when issued; ``push_tokens.json`` in the data directory
keeps its SHA-256 digest (as ``auth.db`` keeps staff tokens'), read again whenever the file
changes, so issuing or revoking a token needs no restart. An integration token is no staff
credential and a staff credential opens no push: they live in different stores.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from base.files import write_file
from ingest.profile_model import load_yaml12
from ingest.push import PushIntake
from ingest.push_native import HttpProfile
from jiayuan.auth.limiter import SignInLimiter
from jiayuan.auth.store import AuthStore, digest

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "jyp_"
"""Push tokens start so (staff tokens with ``jy_``): a leaked one is recognised for what it is."""
TOKENS_FILE: Final = "push_tokens.json"

IntegrationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Integration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: IntegrationId
    profile: str = Field(default="native", min_length=1, max_length=64)
    """The profile that maps this platform's bodies onto canonical messages."""
    note: str = Field(default="", max_length=500)
    devices: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_*?-]{1,64}$")]] = Field(
        min_length=1
    )
    """The devices this platform may report for, as id patterns (``*`` any characters, ``?``
    one): a message for another device is a dead letter (``unknown_topic``), as a device's
    broker account may publish on its own topics only. Required: no default "any", so that a
    platform cannot speak for the community's other devices (``["*"]`` says so on purpose)."""

    def may_report(self, device_id: str) -> bool:
        return any(fnmatch.fnmatchcase(device_id, p) for p in self.devices)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    integrations: list[Integration] = Field(default_factory=list)


class IntegrationError(ValueError):
    """The integrations file is invalid; ``errors`` holds one line per problem, naming the
    file, the integration and the field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def load_integrations(path: Path, profiles: Collection[str]) -> dict[str, Integration]:
    """The integrations declared in ``path``, by id; ``profiles``: the profile ids known."""
    try:
        raw = load_yaml12(path.read_text(encoding="utf-8"))  # YAML 1.2, no key twice
    except OSError as e:
        raise IntegrationError([f"{path}: cannot read ({e.strerror})"]) from None
    except yaml.YAMLError as e:
        raise IntegrationError([f"{path}: not YAML: {e}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise IntegrationError([f"{path}: expected a mapping with 'integrations:'"])
    items = raw.get("integrations")
    errors: list[str] = []
    out: dict[str, Integration] = {}
    if set(raw) - {"integrations"}:
        errors.append(f"{path}: unknown keys {sorted(map(str, set(raw) - {'integrations'}))}")
    if items is not None and not isinstance(items, list):
        errors.append(f"{path}: 'integrations' must be a list")
        items = None
    for n, item in enumerate(items or [], start=1):
        rid = item.get("id") if isinstance(item, dict) else None
        who = f"integration {rid!r} (#{n})" if isinstance(rid, str) else f"integration #{n}"
        try:
            i = Integration.model_validate(item)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                where = ".".join(map(str, err["loc"])) or "(itself)"
                errors.append(f"{path}: {who}: field {where!r}: {err['msg']}")
            continue
        if i.id in out:
            errors.append(f"{path}: {who}: field 'id': declared twice")
        elif i.profile not in profiles:
            errors.append(
                f"{path}: {who}: field 'profile': unknown profile {i.profile!r}"
                f" (known: {', '.join(sorted(profiles))})"
            )
        else:
            out[i.id] = i
    if errors:
        raise IntegrationError(errors)
    return out


@dataclass(frozen=True, slots=True)
class TokenRecord:
    digest: str
    hint: str
    issued_at: float


class PushTokens:
    """The integrations' token digests: in ``push_tokens.json`` (owner-only) of the data
    directory, re-read when the file changes; or, when ``store`` is the installation's shared
    staff store (PostgreSQL), in its ``push_tokens`` table, so that every instance takes a token
    issued through any of them (district/migrations/0011_push_tokens.sql)."""

    def __init__(self, data_dir: Path, store: AuthStore | None = None) -> None:
        self.path = data_dir / TOKENS_FILE
        self.store = store if store is not None and store.shared else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, TokenRecord] = {}

    def _load(self) -> dict[str, TokenRecord]:
        if self.store is not None:
            with self.store.db() as db:
                rows = db.execute("SELECT integration, digest, hint, issued_at FROM push_tokens")
                return {r[0]: TokenRecord(r[1], r[2], float(r[3])) for r in rows.fetchall()}
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    raw = json.loads(self.path.read_text(encoding="utf-8"))
                    self._records = {k: TokenRecord(**v) for k, v in raw.items()}
                except (OSError, ValueError, TypeError, AttributeError) as e:
                    # every push refused (401) until it is put right: said once per change
                    log.error("cannot read %s (%s): no integration may push", self.path, e)
                    self._records = {}
            return self._records

    def check(self, integration: str, token: str) -> bool:
        """Whether ``token`` is the one issued to ``integration`` (constant-time compare of the
        digests; always one compare, known integration or not)."""
        record = self._load().get(integration)
        expected = record.digest if record is not None else "0" * 64
        return hmac.compare_digest(digest(token), expected) and record is not None

    def issued(self, integration: str) -> TokenRecord | None:
        return self._load().get(integration)

    def issue(self, integration: str) -> str:
        """A new token for ``integration``, replacing its previous one; returned once."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(digest(token), token[:8], time.time())
        if self.store is not None:
            with self.store.db() as db:
                db.execute(
                    "INSERT INTO push_tokens (integration, digest, hint, issued_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (integration) DO UPDATE SET"
                    " digest = excluded.digest, hint = excluded.hint,"
                    " issued_at = excluded.issued_at",
                    (integration, record.digest, record.hint, record.issued_at),
                )
            return token
        records = dict(self._load())
        records[integration] = record
        self._write(records)
        return token

    def revoke(self, integration: str) -> bool:
        if self.store is not None:
            with self.store.db() as db:
                gone = db.execute("DELETE FROM push_tokens WHERE integration = ?", (integration,))
                return gone.rowcount > 0
        records = dict(self._load())
        if records.pop(integration, None) is None:
            return False
        self._write(records)
        return True

    def _write(self, records: dict[str, TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            k: {"digest": r.digest, "hint": r.hint, "issued_at": r.issued_at}
            for k, r in records.items()
        }
        write_file(self.path, json.dumps(body, indent=2, sort_keys=True))  # 0600, durable


@dataclass
class PushSetup:
    """What ``POST /api/push/{integration}`` needs from the running service."""

    integrations: dict[str, Integration]
    tokens: PushTokens
    intake: PushIntake
    writable: Callable[[], bool]
    """Whether the journal takes writes now (the pipeline's store health)."""
    profiles: Mapping[str, HttpProfile]
    """What maps each integration's bodies, by profile id (:func:`push_profiles`)."""
    limiter: SignInLimiter = field(default_factory=SignInLimiter)
    """Failed token checks per integration and address, as failed sign-ins are counted."""
