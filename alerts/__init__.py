"""Alerts: the lifecycle of what the rules raise (store, history, subscribers)."""

from alerts.lifecycle import AlertStore, Subscriber
from alerts.model import (
    OPEN_STATUSES,
    RULE,
    STATUSES,
    SYSTEM,
    Action,
    Alert,
    AlertChange,
    AlertError,
    AlertNotFound,
    Audience,
    HistoryEntry,
    InvalidTransition,
    NoteAction,
    Sort,
    Status,
)

__all__ = [
    "OPEN_STATUSES",
    "RULE",
    "STATUSES",
    "SYSTEM",
    "Action",
    "Alert",
    "AlertChange",
    "AlertError",
    "AlertNotFound",
    "AlertStore",
    "Audience",
    "HistoryEntry",
    "InvalidTransition",
    "NoteAction",
    "Sort",
    "Status",
    "Subscriber",
]
