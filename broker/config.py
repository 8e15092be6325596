"""Settings: one frozen object read from ``BROKER_*`` environment variables.

Every knob of the contract lives here, parsed and checked once at start-up. A bad value stops the
process with a message naming the variable, instead of surfacing later as a strange runtime error.
CLI flags override the environment through :meth:`Settings.replace`.

Declared with pydantic-settings: a field's type and ``Field`` bounds are its parser and its check
(``BROKER_<NAME>`` is the variable). Constructing ``Settings(...)`` reads only its arguments;
:meth:`Settings.from_env` reads the environment (or a given mapping), so tests and CLI overrides
never pick up a stray variable by accident.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

PREFIX = "BROKER_"


class ConfigError(ValueError):
    """A setting has a value broker cannot run with; the message names the variable."""


ROLES = ("all", "api", "worker")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


def _comma_list(raw: Any) -> Any:
    # "5, 30,120" in the environment; a tuple when given in Python.
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _lower(raw: Any) -> Any:
    return raw.strip().lower() if isinstance(raw, str) else raw


def _upper(raw: Any) -> Any:
    return raw.strip().upper() if isinstance(raw, str) else raw


# Space-separated CSP source expressions: no ';' or ',' (they would end the directive), no
# quotes except around keywords such as 'none' and 'self', no control characters.
_CSP_SOURCE = r"(?:'[a-z-]+'|[A-Za-z0-9*:/._%-]+)"
CSP_SOURCES = rf"^{_CSP_SOURCE}(?: +{_CSP_SOURCE})*$"
PUBLIC_URL = r"^https?://[A-Za-z0-9.\-\[\]:]+(?:/[A-Za-z0-9._~/-]*)?$"


def _encryption_keys(raw: Any) -> Any:
    # "k1,k2" (base64) in the environment; a tuple of raw keys when given in Python.
    if isinstance(raw, str):
        from broker.crypto import parse_keys

        return parse_keys(raw)
    return raw


def _aes256_keys(keys: tuple[bytes, ...]) -> tuple[bytes, ...]:
    if any(len(k) != 32 for k in keys):
        raise ValueError("every key must be 32 bytes (base64 of 32 random bytes)")
    if len(set(keys)) != len(keys):
        raise ValueError("the same key is listed twice")
    return keys


Seconds = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_ignore_empty=True,  # BROKER_PORT= means "unset", not "invalid"
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,  # inf/nan would break later (SQL intervals, timedelta, sleeps)
        str_strip_whitespace=True,
        validate_default=True,
    )

    database_url: str | None = None
    data_dir: Path = Path(".broker")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    admin_token: Annotated[str, Field(min_length=16)] | None = None
    role: Literal["all", "api", "worker"] = "all"

    window_min_seconds: Positive = 30.0
    window_max_seconds: Positive = 120.0
    window_max_resources: Annotated[int, Field(ge=1)] = 1000

    delivery_timeout_seconds: Positive = 15.0
    retry_schedule: Annotated[
        tuple[Seconds, ...], NoDecode, BeforeValidator(_comma_list), Field(min_length=1)
    ] = (5, 30, 120, 600, 1800, 3600)
    retry_jitter: Annotated[float, Field(ge=0, lt=1)] = 0.2
    allow_private_urls: bool = False

    ingest_max_events: Annotated[int, Field(ge=1, le=1_000_000)] = 10000
    ingest_max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    # Per producer key, requests per second (token bucket, burst = 2 s worth), shared by every
    # API process. 0 disables.
    ingest_rate_limit: Seconds = 0.0
    # POST .../test per registration (the contract: 1 per second, burst 5) and per partner over
    # all its registrations: a rate per second and a burst. A partner rate of 0 disables that one.
    test_delivery_registration_rate: Positive = 1.0
    test_delivery_registration_burst: Annotated[int, Field(ge=1, le=10_000)] = 5
    test_delivery_partner_rate: Seconds = 1.0
    test_delivery_partner_burst: Annotated[int, Field(ge=1, le=10_000)] = 20

    # Delivery worker sizing.
    delivery_concurrency: Annotated[int, Field(ge=1)] = 256
    delivery_per_registration: Annotated[int, Field(ge=1)] = 16
    delivery_batch_size: Annotated[int, Field(ge=1)] = 200
    poll_interval_seconds: Positive = 1.0
    # How often housekeeping recomputes the /metrics gauges (scrapes read the last snapshot).
    gauge_refresh_seconds: Positive = 5.0
    # Extra time past the delivery timeout before an unfinished lease is taken back.
    lease_margin_seconds: Seconds = 15.0

    retention_days: Annotated[int, Field(ge=1)] = 30
    # A Pending event object this old (its registration stayed Suspended or Paused) becomes
    # Failed; 0 = never.
    pending_ttl_days: Annotated[int, Field(ge=0)] = 30
    # Registrations that are not Deleted, per partner; one more answers 429.
    max_registrations_per_partner: Annotated[int, Field(ge=1)] = 100
    db_pool_size: Annotated[int, Field(ge=2)] = 10
    # How long a query waits for a free pooled connection before the request answers 503.
    db_acquire_timeout_seconds: Positive = 5.0
    # Housekeeping runs in the one process holding this lease; another takes over when it lapses.
    leader_lease_seconds: Annotated[float, Field(ge=1)] = 30.0
    # Who may frame the portal (CSP frame-ancestors sources), and the base of portal-link URLs.
    portal_frame_ancestors: Annotated[str, Field(pattern=CSP_SOURCES)] = "'none'"
    public_url: Annotated[str, Field(pattern=PUBLIC_URL)] | None = None

    # Secrets at rest (broker/crypto.py): base64 32-byte keys, the first seals, all open.
    # Empty: a key file in data_dir.
    encryption_keys: Annotated[
        tuple[bytes, ...],
        NoDecode,
        BeforeValidator(_encryption_keys),
        AfterValidator(_aes256_keys),
        Field(repr=False),
    ] = ()
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"

    @model_validator(mode="after")
    def _across_fields(self) -> Settings:
        """Rules that involve more than one field (a single field's rule is its ``Field``)."""

        def need(ok: bool, var: str, why: str) -> None:
            if not ok:
                raise PydanticCustomError("config", f"{PREFIX}{var.upper()}: {why}")

        need(
            self.window_max_seconds >= self.window_min_seconds,
            "window_max_seconds",
            "must be >= BROKER_WINDOW_MIN_SECONDS",
        )
        return self

    @property
    def lease_seconds(self) -> float:
        return self.delivery_timeout_seconds + self.lease_margin_seconds

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (used for CLI overrides and tests)."""
        return _checked(lambda: type(self)(**{**self.model_dump(), **changes}))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``BROKER_*`` variable; unknown ones are ignored, bad ones raise ConfigError."""
        source = _MappingEnvSource(cls, os.environ if env is None else env)
        return _checked(lambda: cls(**source()))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the arguments: the environment enters through from_env, explicitly.
        return (init_settings,)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def _checked(build: Any) -> Settings:
    try:
        settings: Settings = build()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return settings


def _describe(exc: ValidationError) -> str:
    """The first error as ``BROKER_VAR: why, got 'value'`` (the variable leads the message)."""
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    if not loc:  # a cross-field rule: its message already names the variable
        return str(error["msg"])
    var = f"{PREFIX}{str(loc[0]).upper()}"
    where = "".join(f"[{part}]" for part in loc[1:])
    got = "(hidden)" if loc[0] in _SECRETS else repr(error.get("input"))
    return f"{var}{where}: {error['msg']}, got {got}"


# Never echo these into a log, even when they are wrong.
_SECRETS = frozenset({"admin_token", "database_url", "encryption_keys"})
