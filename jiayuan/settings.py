"""Settings: environment variables prefixed ``JIAYUAN_``, safe single-machine defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JIAYUAN_", extra="forbid")

    community: str = Field(default="y", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_client_id: str = Field(default="jiayuan-ingest", min_length=1, max_length=64)
    """Fixed, so the broker keeps the session (and queues messages) across restarts."""
    mqtt_session_expiry_s: int = Field(default=86_400, ge=60)
    mqtt_receive_maximum: int = Field(default=2_000, ge=10, le=65_535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path = Path("./data")
    rules: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Rule files; empty means the built-in community pack. From the environment, paths
    separated by commas (``JIAYUAN_RULES=site.yaml,extra.yaml``)."""
    registry: Path | None = None
    """A registry directory or file (YAML or CSV); none means an empty registry."""
    journal_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    """SQLite fsync level: FULL survives power loss, NORMAL only a process crash."""
    batch_max: int = Field(default=1000, ge=1, le=10_000)
    batch_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    retention_days: float = Field(default=30.0, gt=0)
    public_url: str = ""
    """How staff reach the API (links in notifications); default http://http_host:http_port."""
    log_level: str = "INFO"

    @field_validator("rules", mode="before")
    @classmethod
    def _split_paths(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"
