"""Settings: one frozen object read from ``BROKER_*`` environment variables.

Every knob of the contract lives here, parsed and checked once at start-up. A bad value stops the
process with a message naming the variable, instead of surfacing later as a strange runtime error.
CLI flags override the environment through :meth:`Settings.replace`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a value broker cannot run with; the message names the variable."""


ROLES = ("all", "api", "worker")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".broker")
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None
    role: str = "all"

    window_min_seconds: float = 30.0
    window_max_seconds: float = 120.0
    window_max_resources: int = 1000

    delivery_timeout_seconds: float = 15.0
    retry_schedule: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600)
    retry_jitter: float = 0.2
    allow_private_urls: bool = False

    ingest_max_events: int = 10000
    ingest_max_body_bytes: int = 8 * 1024 * 1024
    # Per producer key, requests per second (token bucket, burst = 2 s worth). 0 disables.
    ingest_rate_limit: float = 0.0

    # Delivery worker sizing.
    delivery_concurrency: int = 256
    delivery_per_registration: int = 16
    delivery_batch_size: int = 200
    poll_interval_seconds: float = 1.0
    # Extra time past the delivery timeout before an unfinished lease is taken back.
    lease_margin_seconds: float = 15.0

    retention_days: int = 30
    db_pool_size: int = 10
    log_format: str = "text"
    log_level: str = "INFO"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (used for CLI overrides and tests)."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        def need(ok: bool, var: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"BROKER_{var.upper()}: {why}")

        # inf/nan parse as floats but would break later (SQL intervals, timedelta, sleeps).
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if isinstance(v, float):
                    need(math.isfinite(v), field.name, f"must be a finite number, got {v}")
        need(1 <= self.port <= 65535, "port", "must be between 1 and 65535")
        need(self.role in ROLES, "role", f"must be one of {', '.join(ROLES)}")
        need(self.window_min_seconds > 0, "window_min_seconds", "must be > 0")
        need(
            self.window_max_seconds >= self.window_min_seconds,
            "window_max_seconds",
            "must be >= BROKER_WINDOW_MIN_SECONDS",
        )
        need(self.window_max_resources >= 1, "window_max_resources", "must be >= 1")
        need(self.delivery_timeout_seconds > 0, "delivery_timeout_seconds", "must be > 0")
        need(len(self.retry_schedule) >= 1, "retry_schedule", "needs at least one delay")
        need(all(d >= 0 for d in self.retry_schedule), "retry_schedule", "delays must be >= 0")
        need(0 <= self.retry_jitter < 1, "retry_jitter", "must be in [0, 1)")
        need(1 <= self.ingest_max_events <= 1_000_000, "ingest_max_events", "must be 1..1000000")
        need(self.ingest_max_body_bytes >= 1024, "ingest_max_body_bytes", "must be >= 1024")
        need(self.ingest_rate_limit >= 0, "ingest_rate_limit", "must be >= 0")
        need(self.delivery_concurrency >= 1, "delivery_concurrency", "must be >= 1")
        need(self.delivery_per_registration >= 1, "delivery_per_registration", "must be >= 1")
        need(self.delivery_batch_size >= 1, "delivery_batch_size", "must be >= 1")
        need(self.poll_interval_seconds > 0, "poll_interval_seconds", "must be > 0")
        need(self.lease_margin_seconds >= 0, "lease_margin_seconds", "must be >= 0")
        need(self.retention_days >= 1, "retention_days", "must be >= 1")
        need(self.db_pool_size >= 2, "db_pool_size", "must be >= 2")
        need(self.log_format in ("text", "json"), "log_format", "must be text or json")
        need(self.log_level in LOG_LEVELS, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        if self.admin_token is not None:
            need(len(self.admin_token) >= 16, "admin_token", "must be at least 16 characters")

    @property
    def lease_seconds(self) -> float:
        return self.delivery_timeout_seconds + self.lease_margin_seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``BROKER_*`` variable; unknown ones are ignored, bad ones raise ConfigError."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            var = f"BROKER_{field.name.upper()}"
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            parse = _PARSERS.get(field.name) or _parser_for(field.type)
            try:
                values[field.name] = parse(raw.strip())
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{var}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_schedule(raw: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated seconds, got {raw!r}") from None


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _parse_float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "retry_schedule": _parse_schedule,
    "data_dir": Path,
    "log_format": str.lower,
    "log_level": str.upper,
}


def _parser_for(type_name: Any) -> Callable[[str], Any]:
    # Annotations are strings under `from __future__ import annotations`.
    name = str(type_name)
    if name == "bool":
        return _parse_bool
    if name == "int":
        return _parse_int
    if name == "float":
        return _parse_float
    return str
