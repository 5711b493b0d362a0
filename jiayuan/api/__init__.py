"""The HTTP API (FastAPI): devices, readings, alerts, dead letters, the live alert stream,
health and metrics."""

from jiayuan.api.app import create_app
from jiayuan.api.server import ApiServer, make_server
from jiayuan.api.stream import Broadcaster

__all__ = ["ApiServer", "Broadcaster", "create_app", "make_server"]
