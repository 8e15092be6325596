"""Settings: contract defaults, BROKER_* parsing, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.config import ConfigError, Settings


def test_defaults_match_the_contract():
    s = Settings.from_env({})
    assert s == Settings()
    assert s.database_url is None
    assert s.data_dir == Path(".broker")
    assert s.host == "127.0.0.1"
    assert s.port == 8080
    assert s.admin_token is None
    assert s.role == "all"
    assert (s.window_min_seconds, s.window_max_seconds, s.window_max_resources) == (30, 120, 1000)
    assert s.delivery_timeout_seconds == 15
    assert s.retry_schedule == (5, 30, 120, 600, 1800, 3600)
    assert s.retry_jitter == pytest.approx(0.2)
    assert s.allow_private_urls is False
    assert s.ingest_max_events == 10000
    assert s.retention_days == 30


def test_every_variable_is_read_from_the_environment():
    env = {
        "BROKER_DATABASE_URL": "postgresql://u@db:5432/broker",
        "BROKER_DATA_DIR": "/var/lib/broker",
        "BROKER_HOST": "0.0.0.0",
        "BROKER_PORT": " 9090 ",
        "BROKER_ADMIN_TOKEN": "a-very-long-admin-token",
        "BROKER_ROLE": "worker",
        "BROKER_WINDOW_MIN_SECONDS": "2.5",
        "BROKER_WINDOW_MAX_SECONDS": "10",
        "BROKER_WINDOW_MAX_RESOURCES": "50",
        "BROKER_DELIVERY_TIMEOUT_SECONDS": "3",
        "BROKER_RETRY_SCHEDULE": "1, 2.5,60",
        "BROKER_ALLOW_PRIVATE_URLS": "TRUE",
        "BROKER_INGEST_MAX_EVENTS": "500",
        "BROKER_INGEST_RATE_LIMIT": "100",
        "BROKER_RETENTION_DAYS": "7",
        "BROKER_LOG_FORMAT": "JSON",
        "BROKER_LOG_LEVEL": "debug",
        "UNRELATED": "ignored",
        "BROKER_UNKNOWN_THING": "ignored too",
    }
    s = Settings.from_env(env)
    assert s.database_url == "postgresql://u@db:5432/broker"
    assert s.data_dir == Path("/var/lib/broker")
    assert s.host == "0.0.0.0"
    assert s.port == 9090
    assert s.admin_token == "a-very-long-admin-token"
    assert s.role == "worker"
    assert (s.window_min_seconds, s.window_max_seconds, s.window_max_resources) == (2.5, 10, 50)
    assert s.delivery_timeout_seconds == 3
    assert s.retry_schedule == (1, 2.5, 60)
    assert s.allow_private_urls is True
    assert s.ingest_max_events == 500
    assert s.ingest_rate_limit == 100
    assert s.retention_days == 7
    assert s.log_format == "json"
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("off", False),
    ],
)
def test_booleans(raw, expected):
    assert Settings.from_env({"BROKER_ALLOW_PRIVATE_URLS": raw}).allow_private_urls is expected


def test_empty_values_mean_unset():
    assert Settings.from_env({"BROKER_PORT": "", "BROKER_RETRY_SCHEDULE": ""}) == Settings()


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("BROKER_PORT", "abc"),
        ("BROKER_PORT", "80.5"),
        ("BROKER_PORT", "0"),
        ("BROKER_PORT", "65536"),
        ("BROKER_RETRY_SCHEDULE", "a,b"),
        ("BROKER_RETRY_SCHEDULE", "5,-1"),
        ("BROKER_RETRY_SCHEDULE", ","),
        ("BROKER_RETRY_SCHEDULE", "5,inf"),
        ("BROKER_RETRY_SCHEDULE", "nan"),
        ("BROKER_ALLOW_PRIVATE_URLS", "maybe"),
        ("BROKER_WINDOW_MIN_SECONDS", "0"),
        ("BROKER_WINDOW_MIN_SECONDS", "nan"),
        ("BROKER_WINDOW_MAX_SECONDS", "inf"),
        ("BROKER_WINDOW_MAX_RESOURCES", "0"),
        ("BROKER_DELIVERY_TIMEOUT_SECONDS", "-1"),
        ("BROKER_DELIVERY_TIMEOUT_SECONDS", "infinity"),
        ("BROKER_INGEST_MAX_EVENTS", "0"),
        ("BROKER_INGEST_MAX_EVENTS", "many"),
        ("BROKER_INGEST_RATE_LIMIT", "-5"),
        ("BROKER_RETENTION_DAYS", "0"),
        ("BROKER_ROLE", "everything"),
        ("BROKER_ADMIN_TOKEN", "short"),
        ("BROKER_LOG_FORMAT", "xml"),
        ("BROKER_LOG_LEVEL", "loud"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(var, raw):
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: raw})


def test_window_max_below_min_names_the_max():
    with pytest.raises(ConfigError, match="BROKER_WINDOW_MAX_SECONDS"):
        Settings.from_env({"BROKER_WINDOW_MIN_SECONDS": "60", "BROKER_WINDOW_MAX_SECONDS": "30"})
    # equal is fine
    s = Settings.from_env({"BROKER_WINDOW_MIN_SECONDS": "60", "BROKER_WINDOW_MAX_SECONDS": "60"})
    assert s.window_max_seconds == 60


def test_config_error_message_shows_the_bad_value():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"BROKER_PORT": "abc"})
    assert "abc" in str(info.value)
    assert str(info.value).startswith("BROKER_PORT")


def test_replace_validates_and_leaves_the_original_alone():
    base = Settings()
    changed = base.replace(port=9000, role="api")
    assert (changed.port, changed.role) == (9000, "api")
    assert (base.port, base.role) == (8080, "all")
    with pytest.raises(ConfigError, match="BROKER_PORT"):
        base.replace(port=70000)
    with pytest.raises(ConfigError, match="BROKER_WINDOW_MAX_SECONDS"):
        base.replace(window_min_seconds=200)
    with pytest.raises(ConfigError, match="BROKER_ROLE"):
        base.replace(role="nope")


def test_settings_are_frozen():
    with pytest.raises(ValidationError, match="frozen"):
        Settings().port = 1  # type: ignore[misc]


def test_lease_covers_the_delivery_timeout():
    s = Settings(delivery_timeout_seconds=15, lease_margin_seconds=15)
    assert s.lease_seconds == 30
