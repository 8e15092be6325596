"""Logging: readable text by default, one JSON object per line with BROKER_LOG_FORMAT=json."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from broker.config import Settings

# Extra attributes worth carrying into JSON logs when a call site passes them.
_CONTEXT_FIELDS = (
    "event_id",
    "registration_id",
    "partner_id",
    "attempt",
    "response_status",
    "duration_ms",
    "from_status",
    "to_status",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                # Numbers stay numbers (queryable as such); ids and enums become strings.
                plain = isinstance(value, int | float) and not isinstance(value, bool)
                entry[name] = value if plain else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = __import__("time").gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # pgserver narrates initdb/pg_ctl at INFO; start-up output should stay readable.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # APScheduler announces every job it adds and runs at INFO: noise next to broker's own lines.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
