"""Partner API: event history, attempts, resend, and the event-type catalog."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from broker.api.appkeys import STORE
from broker.api.auth import partner_id_of
from broker.api.paging import encode_cursor, page_cursor, page_limit, query_errors
from broker.api.problems import Problem, invalid, not_found
from broker.api.schema import (
    EVENT_NAME_MAX_LENGTH,
    AttemptList,
    EventPage,
    EventTypeList,
)
from broker.api.schema import Event as EventOut
from broker.api.serialize import json_response
from broker.domain.errors import FieldError
from broker.domain.ids import parse_time, parse_uuid
from broker.domain.models import Event
from broker.domain.states import EVENT_STATUSES

routes = web.RouteTableDef()

_QUERY_PARAMS = frozenset(
    {"registrationId", "eventName", "status", "createdAfter", "createdBefore", "limit", "cursor"}
)


@routes.get("/webhooks/v1/events")
async def list_events(request: web.Request) -> web.Response:
    query = request.query
    errors = query_errors(query, _QUERY_PARAMS)
    registration_id = None
    if "registrationId" in query:
        registration_id = parse_uuid(query["registrationId"])
        if registration_id is None:
            errors.append(FieldError(field="registrationId", message="must be a UUID"))
    event_name = query.get("eventName")
    if event_name is not None and (
        not 1 <= len(event_name) <= EVENT_NAME_MAX_LENGTH or "\x00" in event_name
    ):
        # NUL cannot reach PostgreSQL text (it would be a 500).
        errors.append(
            FieldError(
                field="eventName",
                message=f"must be 1 to {EVENT_NAME_MAX_LENGTH} characters, without NUL",
            )
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
    limit = page_limit(query, errors)
    after = page_cursor(query, errors)
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
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(events) > limit else None
    return json_response(EventPage.model_validate({"data": page, "next_cursor": next_cursor}))


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
    return json_response(EventOut.model_validate(await _event_or_404(request)))


@routes.get("/webhooks/v1/events/{id}/attempts")
async def list_attempts(request: web.Request) -> web.Response:
    event = await _event_or_404(request)
    attempts = await request.app[STORE].list_attempts(event.id)
    return json_response(AttemptList.model_validate({"data": attempts}))


@routes.post("/webhooks/v1/events/{id}/resend")
async def resend_event(request: web.Request) -> web.Response:
    event = await _event_or_404(request)
    if event.event_name == "test.event":  # a connectivity test is history, never queued
        raise Problem(
            409, "Conflict", "a test.event delivery cannot be resent; send a new test instead"
        )
    resent = await request.app[STORE].resend_event(
        event.id,
        partner_id_of(request),
    )
    if resent is None:  # its registration was deleted
        raise not_found("event")
    return json_response(EventOut.model_validate(resent), status=202)


@routes.get("/webhooks/v1/event-types")
async def partner_event_types(request: web.Request) -> web.Response:
    types = await request.app[STORE].list_event_types()
    return json_response(EventTypeList.model_validate({"data": types}))
