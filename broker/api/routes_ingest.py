"""Producer API: ``POST /internal/v1/resource-events``.

All or nothing: the body is checked completely (shape, then partners and event types against the
store) before anything is written, and a 400 names every bad item. The write goes through the
group-commit batcher, so 202 means the rows are committed.
"""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from broker.api.appkeys import INGEST, PRINCIPAL, SETTINGS, STORE
from broker.api.problems import Problem, invalid
from broker.api.serialize import json_response
from broker.api.validation import parse_resource_events, read_json
from broker.domain.errors import FieldError
from broker.store.store import IngestRequest

routes = web.RouteTableDef()

MAX_IDEMPOTENCY_KEY = 255


class TokenBucket:
    """Per-producer request rate limit; burst of two seconds' worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * 2)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


# One bucket per producer key, kept in the application (not the module) so that two apps in
# one process, as in tests, never share a budget.
RATE_LIMITS = web.AppKey("rate_limits", dict[uuid.UUID | None, TokenBucket])


def _rate_limit(request: web.Request) -> None:
    rate = request.app[SETTINGS].ingest_rate_limit
    if not rate:
        return
    buckets = request.app[RATE_LIMITS]
    key = request[PRINCIPAL].key_id
    bucket = buckets.get(key)
    if bucket is None:
        bucket = buckets[key] = TokenBucket(rate)
    wait = bucket.take()
    if wait:
        seconds = max(1, int(wait + 0.999))
        raise Problem(
            429,
            "Too Many Requests",
            f"this producer key is limited to {rate:g} requests per second",
            headers={"Retry-After": str(seconds)},
        )


@routes.post("/internal/v1/resource-events")
async def ingest(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    _rate_limit(request)
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not (
        1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY and idempotency_key.isprintable()
    ):
        raise invalid(
            [FieldError(field="Idempotency-Key", message="must be 1 to 255 printable characters")]
        )
    body = await read_json(request, limit=settings.ingest_max_body_bytes)
    items, errors = parse_resource_events(body, max_events=settings.ingest_max_events)
    store = request.app[STORE]
    if items:
        unknown_partners = await store.unknown_partners({i.partner_id for i in items})
        unknown_types = await store.unknown_event_types({i.event_name for i in items})
        if unknown_partners or unknown_types:
            errors.extend(_reference_errors(body["events"], unknown_partners, unknown_types))
    if errors:
        errors.sort(key=_error_order)
        raise invalid(errors)
    answer = await request.app[INGEST].submit(
        IngestRequest(
            producer_key_id=request[PRINCIPAL].key_id,  # type: ignore[arg-type]
            idempotency_key=idempotency_key,
            items=items,
        )
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return json_response(answer.body, status=answer.status, headers=headers)


def _reference_errors(
    raw: list[object], unknown_partners: set[uuid.UUID], unknown_types: set[str]
) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            continue
        try:
            partner = uuid.UUID(entry.get("partnerId"))
        except (TypeError, ValueError, AttributeError):
            partner = None
        if partner is not None and partner in unknown_partners:
            errors.append(FieldError(field=f"events[{index}].partnerId", message="unknown partner"))
        name = entry.get("eventName")
        if isinstance(name, str) and name in unknown_types:
            errors.append(
                FieldError(field=f"events[{index}].eventName", message="unknown event type")
            )
    return errors


def _error_order(error: FieldError) -> tuple[int, str]:
    if error.field.startswith("events["):
        return int(error.field[7 : error.field.index("]")]), error.field
    return -1, error.field
