"""Partner API: event history, attempts, resend, and the event-type catalog."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

from aiohttp import web

from broker.api.appkeys import STORE
from broker.api.auth import partner_id_of
from broker.api.problems import invalid, not_found
from broker.api.serialize import attempt_json, event_json, event_type_json, json_response
from broker.domain.errors import FieldError
from broker.domain.ids import parse_time, parse_uuid
from broker.domain.models import Event
from broker.domain.states import EVENT_STATUSES

routes = web.RouteTableDef()

_QUERY_PARAMS = frozenset(
    {"registrationId", "eventName", "status", "createdAfter", "createdBefore", "limit", "cursor"}
)


def encode_cursor(event: Event) -> str:
    """Opaque keyset cursor: the (createdAt, id) of the last row of a page.

    Microsecond precision is kept (not the API's milliseconds) so the next page starts exactly
    after this row, and rows inserted meanwhile (always newer) never shift a page.
    """
    raw = f"{event.created_at.isoformat()}|{event.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, ident = raw.partition("|")
        when = datetime.fromisoformat(moment)
        if when.tzinfo is None:
            return None
        # In UTC here, so an out-of-range instant is refused now, not by the database driver.
        return when.astimezone(UTC), uuid.UUID(ident)
    except (binascii.Error, ValueError, UnicodeDecodeError, OverflowError):
        return None


@routes.get("/webhooks/v1/events")
async def list_events(request: web.Request) -> web.Response:
    query = request.query
    errors: list[FieldError] = []
    for key in dict.fromkeys(query):
        if key not in _QUERY_PARAMS:
            errors.append(FieldError(field=key, message="unknown query parameter"))
        elif len(query.getall(key)) > 1:
            # ?status=Pending&status=Failed is not an OR: refuse rather than use one silently.
            errors.append(FieldError(field=key, message="must be given at most once"))
    registration_id = None
    if "registrationId" in query:
        registration_id = parse_uuid(query["registrationId"])
        if registration_id is None:
            errors.append(FieldError(field="registrationId", message="must be a UUID"))
    event_name = query.get("eventName")
    if event_name is not None and (not 1 <= len(event_name) <= 200 or "\x00" in event_name):
        # NUL cannot reach PostgreSQL text (it would be a 500).
        errors.append(
            FieldError(field="eventName", message="must be 1 to 200 characters, without NUL")
        )
    status = query.get("status")
    if status is not None and status not in EVENT_STATUSES:
        errors.append(
            FieldError(field="status", message="must be one of " + ", ".join(EVENT_STATUSES))
        )
    bounds: dict[str, datetime | None] = {"createdAfter": None, "createdBefore": None}
    for name in bounds:
        if name in query:
            try:
                bounds[name] = parse_time(query[name])
            except ValueError as exc:
                errors.append(FieldError(field=name, message=str(exc)))
    limit = 100
    if "limit" in query:
        raw_limit = query["limit"]
        # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 500:
            errors.append(FieldError(field="limit", message="must be an integer from 1 to 500"))
        else:
            limit = int(raw_limit)
    after = None
    if "cursor" in query:
        after = decode_cursor(query["cursor"])
        if after is None:
            errors.append(FieldError(field="cursor", message="is not a cursor this API issued"))
    if errors:
        raise invalid(errors)
    events = await request.app[STORE].list_events(
        partner_id_of(request),
        registration_id=registration_id,
        event_name=event_name,
        status=status,
        created_after=bounds["createdAfter"],
        created_before=bounds["createdBefore"],
        after=after,
        limit=limit + 1,
    )
    page = events[:limit]
    next_cursor = encode_cursor(page[-1]) if len(events) > limit else None
    return json_response({"data": [event_json(e) for e in page], "nextCursor": next_cursor})


async def _event_or_404(request: web.Request) -> Event:
    event_id = parse_uuid(request.match_info["id"])
    event = (
        None
        if event_id is None
        else await request.app[STORE].get_event(
            event_id,
            partner_id_of(request),
        )
    )
    if event is None:
        raise not_found("event")
    return event


@routes.get("/webhooks/v1/events/{id}")
async def get_event(request: web.Request) -> web.Response:
    return json_response(event_json(await _event_or_404(request)))


@routes.get("/webhooks/v1/events/{id}/attempts")
async def list_attempts(request: web.Request) -> web.Response:
    event = await _event_or_404(request)
    attempts = await request.app[STORE].list_attempts(event.id)
    return json_response({"data": [attempt_json(a) for a in attempts]})


@routes.post("/webhooks/v1/events/{id}/resend")
async def resend_event(request: web.Request) -> web.Response:
    event = await _event_or_404(request)
    resent = await request.app[STORE].resend_event(
        event.id,
        partner_id_of(request),
    )
    if resent is None:  # its registration was deleted
        raise not_found("event")
    return json_response(event_json(resent), status=202)


@routes.get("/webhooks/v1/event-types")
async def partner_event_types(request: web.Request) -> web.Response:
    types = await request.app[STORE].list_event_types()
    return json_response({"data": [event_type_json(t) for t in types]})
