"""What one signed-in person may see of the service's stores: the only way the routes read
devices, readings, alerts and residents, so a route cannot forget the caller's scope.

Out of scope is the same as absent: another caretaker's resident, device or alert answers 404
(its existence is not confirmed). A role that may not read a kind of data at all (a wearable's
health readings for anyone but the wearer's caretakers) answers 403.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from fastapi import HTTPException

from alerts import Alert, AlertNotFound
from ingest.journal import Step
from jiayuan.api.unreadable import shown
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.scope import Principal, Scope
from jiayuan.context import AppContext
from registry import Resident
from registry.assignments import history_floor

HEALTH_REFUSED: Final = (
    "a wearable's readings are health data: only the wearer's caretakers may read them"
)


class View:
    def __init__(self, ctx: AppContext, scope: Scope, audit: AuditLog) -> None:
        self.ctx = ctx
        self.scope = scope
        self.audit = audit

    @property
    def principal(self) -> Principal:
        return self.scope.principal

    # ------------------------------------------------------------------ communities

    def communities(self, community: str | None = None) -> frozenset[str] | None:
        """The communities a listing shows: ``community`` when asked for, else every one the
        caller sees (None: all). 403 for a community the caller may not see, 404 for one the
        installation does not have."""
        if community is None:
            return self.scope.communities
        if not self.scope.sees_community(community):
            yours = ", ".join(sorted(self.scope.communities or ()))
            raise HTTPException(
                403, f"community {community!r} is not one you may see (yours: {yours or 'none'})"
            )
        if community not in self.ctx.registry.parts:
            raise HTTPException(
                404,
                f"no community {community!r} in this installation"
                f" (it has: {', '.join(self.ctx.registry.parts)})",
            )
        return frozenset({community})

    # ------------------------------------------------------------------ alerts

    def alerts(self, **filters: Any) -> tuple[list[Alert], int]:
        """A page of the alerts in scope (``filters`` as :meth:`alerts.AlertStore.find`;
        ``community``: checked as :meth:`communities`)."""
        if filters.get("community") is not None:
            filters["community"] = sorted(self.communities(filters["community"]) or ())
        items, total = self.ctx.alerts.find(audience=self.scope.audience, **filters)
        return [self.scope.redact(a) for a in items], total

    def alert(self, alert_id: int) -> Alert:
        """The alert with its history; 404 when absent or out of scope."""
        try:
            a = self.ctx.alerts.get(alert_id)
        except AlertNotFound as e:
            raise HTTPException(404, str(e)) from None
        if not self.ctx.alerts.admits(self.scope.audience, a):
            raise HTTPException(404, f"alert {alert_id} not found")
        return self.scope.redact(a)

    def sees(self, alert: Alert) -> bool:
        return self.ctx.alerts.admits(self.scope.audience, alert)

    def open_alerts(self, device_ids: Iterable[str]) -> list[Alert]:
        out: list[Alert] = []
        for device_id in device_ids:
            out.extend(
                self.scope.redact(a) for a in self.ctx.alerts.open_alerts(device_id) if self.sees(a)
            )
        return out

    # ------------------------------------------------------------------ devices

    def devices(
        self, community: str | None = None, **filters: Any
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the devices in scope (``filters`` as :meth:`Journal.list_devices`;
        ``community`` as :meth:`communities`)."""
        return self.ctx.journal.list_devices(
            among=self.scope.device_filter(), communities=self.communities(community), **filters
        )

    def device(self, device_id: str) -> dict[str, Any]:
        """A device's state; 404 when unknown or out of scope."""
        d = self.ctx.journal.get_device(device_id)
        if (
            d is None
            or not self.scope.sees_device(device_id, d["kind"])
            or not self.scope.sees_community(d.get("community"))
        ):
            raise HTTPException(404, f"device '{device_id}' not found")
        return d

    def readings(self, device_id: str, *, step: Step = "raw", **query: Any) -> list[dict[str, Any]]:
        """A device's readings; 404 out of scope, 403 for health readings not theirs."""
        d = self.device(device_id)
        if not self.scope.sees_readings(device_id, d["kind"]):
            raise HTTPException(403, HEALTH_REFUSED)
        floor = history_floor(self.ctx.registry, device_id)  # not a previous wearer's
        if floor is not None:
            if step != "raw":  # nor a bucket that holds some of them
                width = {"1m": 60, "1h": 3600}[step]
                floor = -(-floor // width) * width
            since = query.get("since")
            query["since"] = floor if since is None else max(since, floor)
        rows = self.ctx.journal.readings(device_id, step=step, **query)
        if step == "raw":
            for row in rows:
                row["values"] = shown(row["values"])
        return rows

    def vitals_of(self, device_id: str | None) -> bool:
        return self.scope.sees_vitals(device_id)

    # ------------------------------------------------------------------ residents

    def residents(self, community: str | None = None) -> list[Resident]:
        """The residents in scope (of ``community``, checked as :meth:`communities`)."""
        shown = self.communities(community)
        registry = self.ctx.registry
        return [
            r
            for r in registry.residents.values()
            if self.scope.sees_resident(r.resident_id)
            and (shown is None or registry.resident_community(r.resident_id) in shown)
        ]

    def resident(self, resident_id: str) -> Resident:
        r = self.ctx.registry.residents.get(resident_id)
        if (
            r is None
            or not self.scope.sees_resident(resident_id)
            or not self.scope.sees_community(self.ctx.registry.resident_community(resident_id))
        ):
            raise HTTPException(404, f"resident '{resident_id}' not found")
        return r
