"""Domain objects to the JSON shapes of the contract (camelCase, RFC 3339 milliseconds)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from broker.domain.ids import format_time
from broker.domain.models import Attempt, Event, EventType, Partner, Registration


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def partner_json(partner: Partner) -> dict[str, Any]:
    return {
        "id": str(partner.id),
        "name": partner.name,
        "createdAt": format_time(partner.created_at),
    }


def event_type_json(event_type: EventType) -> dict[str, Any]:
    return {
        "name": event_type.name,
        "description": event_type.description,
        "createdAt": format_time(event_type.created_at),
        "updatedAt": format_time(event_type.updated_at),
    }


def registration_json(reg: Registration, *, with_secret: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(reg.id),
        "url": reg.url,
        "eventTypes": reg.event_types,
        "description": reg.description,
        "status": reg.status.value,
        "failureCount": reg.failure_count,
        "lastSuccessAt": format_time(reg.last_success_at),
        "lastFailureAt": format_time(reg.last_failure_at),
        "createdAt": format_time(reg.created_at),
        "updatedAt": format_time(reg.updated_at),
    }
    if with_secret:
        body["secret"] = reg.secret
    return body


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "eventName": event.event_name,
        "status": event.status,
        "partnerId": str(event.partner_id),
        "registrationId": str(event.registration_id),
        "createdAt": format_time(event.created_at),
        "lastAttemptedAt": format_time(event.last_attempted_at),
        "resources": event.resources,
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "attemptNumber": attempt.attempt_number,
        "attemptedAt": format_time(attempt.attempted_at),
        "durationMs": attempt.duration_ms,
        "responseStatus": attempt.response_status,
        "error": attempt.error,
        "responseBody": attempt.response_body,
    }
