"""Authentication: from a cookie or a bearer token to a :class:`Principal`, and signing in.

A principal's role is read from the registry at every request, so a role changed (or a person
removed) in the registry counts from the next request after the change (through the API, a
reloaded file or a restart), for open sessions too.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from jiayuan.auth import passwords
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.limiter import SignInLimiter, limiter_for
from jiayuan.auth.manage import forget_staff
from jiayuan.auth.scope import ADMIN_TOKEN_ID, Principal, Scope, Scopes
from jiayuan.auth.store import AuthStore, Session, digest
from jiayuan.settings import Settings
from registry import Registry

log = logging.getLogger(__name__)


class SignInRefused(Exception):
    """Wrong staff id or password (which of them is never said)."""


class SignInLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SignedIn:
    principal: Principal
    session_id: str
    """The cookie's value: handed to the browser once, stored only as a digest."""
    session: Session


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        store: AuthStore,
        registry: Registry,
        *,
        limiter: SignInLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self._view = (registry, Scopes(registry))
        self.audit = AuditLog(store)
        self.limiter = limiter or limiter_for(store)
        self.clock = clock
        admin = settings.admin_token.get_secret_value()
        self._admin_digest = digest(admin) if admin else None

    @property
    def registry(self) -> Registry:
        return self._view[0]

    @property
    def scopes(self) -> Scopes:
        return self._view[1]

    def set_registry(self, registry: Registry) -> None:
        """Roles, people and scopes from ``registry`` from the next request on (open sessions
        and tokens too). A person removed loses their sessions, tokens and password for good:
        a new hire given the same id starts with none."""
        removed = self._view[0].staff.keys() - registry.staff.keys()
        self._view = (registry, Scopes(registry))
        forget_staff(self.store, sorted(removed))

    # ------------------------------------------------------------------ requests

    def from_bearer(self, token: str) -> Principal | None:
        if self._admin_digest is not None and hmac.compare_digest(
            digest(token), self._admin_digest
        ):
            return Principal(
                ADMIN_TOKEN_ID, "admin", "Automation (JIAYUAN_ADMIN_TOKEN)", "admin-token"
            )
        t = self.store.token(token)
        if t is None:
            return None
        staff = self.registry.staff.get(t.staff_id)
        if staff is None:
            return None
        return Principal(
            staff.staff_id, staff.role, staff.name, "token", expires_at=t.expires_at, token_id=t.id
        )

    def from_session(self, session_id: str) -> Principal | None:
        s = self.store.session(session_id)
        if s is None:
            return None
        staff = self.registry.staff.get(s.staff_id)
        if staff is None:
            return None
        return Principal(
            staff.staff_id, staff.role, staff.name, "session", csrf=s.csrf, expires_at=s.expires_at
        )

    def scope(self, principal: Principal) -> Scope:
        return self.scopes.of(principal)

    # ------------------------------------------------------------------ signing in

    def sign_in(self, staff_id: str, password: str, ip: str) -> SignedIn:
        """Check the password (slowly, by design) and open a session. Raises
        :class:`SignInLimited` while the account or the address is locked, and
        :class:`SignInRefused` for a wrong id or password; both are audited."""
        wait = self.limiter.wait(staff_id, ip)
        if wait:
            raise SignInLimited(wait)
        staff = self.registry.staff.get(staff_id)
        stored = self.store.password_hash(staff_id) if staff is not None else None
        if staff is None or not passwords.verify_password(stored, password):
            locked = self.limiter.failed(staff_id, ip)
            self.audit.record(
                "anonymous",
                "auth.login_failed",
                target=staff_id,
                outcome="refused",
                ip=ip,
                known=staff is not None,
                password_set=stored is not None,
            )
            if locked:
                self.audit.record(
                    "anonymous",
                    "auth.login_limited",
                    target=staff_id,
                    outcome="refused",
                    ip=ip,
                    locked_s=locked,
                )
            raise SignInRefused("wrong staff id or password")
        self.limiter.succeeded(staff_id)
        if stored is not None and passwords.needs_rehash(stored):
            self.store.set_password_hash(
                staff_id, passwords.hash_password(password), staff_id, end_sessions=False
            )
        sid, session = self.store.start_session(staff_id, self.settings.session_hours * 3600, ip)
        self.audit.record(staff_id, "auth.login", target=staff_id, ip=ip, via="session")
        principal = Principal(
            staff.staff_id,
            staff.role,
            staff.name,
            "session",
            csrf=session.csrf,
            expires_at=session.expires_at,
        )
        return SignedIn(principal, sid, session)
