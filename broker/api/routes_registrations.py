"""Partner API: registrations and their lifecycle (restart, pause, unpause, delete, test, rotate)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from aiohttp import web

from broker import metrics
from broker.api.appkeys import HTTP_SESSION, SETTINGS, STORE
from broker.api.auth import partner_id_of
from broker.api.problems import Problem, invalid, not_found
from broker.api.serialize import attempt_json, json_response, registration_json
from broker.api.validation import (
    MAX_DESCRIPTION_LENGTH,
    MAX_URL_LENGTH,
    check_basic_auth,
    check_event_type_list,
    check_secret,
    check_text,
    exact_names,
    parse_json,
    read_body,
    read_json,
    require_object,
)
from broker.domain.errors import FieldError
from broker.domain.ids import parse_uuid, utcnow, uuid7
from broker.domain.models import Attempt, Registration
from broker.domain.payload import event_body
from broker.domain.signing import generate_secret
from broker.domain.states import Status, Trigger
from broker.http.addresses import UrlRefused, validate_callback_url
from broker.http.sender import send

routes = web.RouteTableDef()
log = logging.getLogger(__name__)

MAX_GRACE_SECONDS = 7 * 86400


async def _check_url(request: web.Request, value: Any, errors: list[FieldError]) -> str | None:
    url = check_text(value, "url", errors, min_len=1, max_len=MAX_URL_LENGTH)
    if url is None:
        return None
    try:
        return await validate_callback_url(
            url, allow_private=request.app[SETTINGS].allow_private_urls
        )
    except UrlRefused as exc:
        errors.append(FieldError(field="url", message=str(exc)))
        return None


async def _check_catalog(
    request: web.Request, patterns: list[str] | None, sent: Any, errors: list[FieldError]
) -> None:
    """Exact names must be in the catalog; errors index ``sent`` (the list as the partner sent
    it), since ``patterns`` has duplicates and invalid entries dropped."""
    if not patterns:
        return
    unknown = await request.app[STORE].unknown_event_types(exact_names(patterns))
    for i, pattern in enumerate(sent):
        if isinstance(pattern, str) and pattern in unknown:
            errors.append(
                FieldError(field=f"eventTypes[{i}]", message=f"unknown event type {pattern}")
            )


def _registration_id(request: web.Request) -> uuid.UUID:
    reg_id = parse_uuid(request.match_info["id"])
    if reg_id is None:
        raise not_found("registration")
    return reg_id


async def _get_or_404(request: web.Request) -> Registration:
    reg = await request.app[STORE].get_registration(
        _registration_id(request),
        partner_id_of(request),
    )
    if reg is None:
        raise not_found("registration")
    return reg


async def _get_usable(request: web.Request, action: str) -> Registration:
    """The registration an action works on: 404 when unknown, 409 when Deleted (like PATCH,
    restart, pause and unpause of a Deleted one; only GET and a second DELETE answer 404)."""
    reg_id, partner_id = _registration_id(request), partner_id_of(request)
    reg = await request.app[STORE].get_registration(reg_id, partner_id)
    if reg is not None:
        return reg
    if await request.app[STORE].registration_status(reg_id, partner_id) is Status.DELETED:
        raise Problem(
            409,
            "Conflict",
            f"cannot {action} a registration whose status is Deleted",
            slug="invalid-transition",
            extra={"currentStatus": Status.DELETED.value},
        )
    raise not_found("registration")


@routes.post("/webhooks/v1/registrations")
async def create_registration(request: web.Request) -> web.Response:
    errors: list[FieldError] = []
    body = require_object(
        await read_json(request),
        {"url", "eventTypes", "description", "secret", "basicAuth"},
        errors,
    )
    if "url" not in body:
        errors.append(FieldError(field="url", message="is required"))
    if "eventTypes" not in body:
        errors.append(FieldError(field="eventTypes", message="is required"))
    patterns = (
        check_event_type_list(body["eventTypes"], "eventTypes", errors)
        if "eventTypes" in body
        else None
    )
    description = check_text(
        body.get("description", ""), "description", errors, max_len=MAX_DESCRIPTION_LENGTH
    )
    secret = (
        check_secret(body["secret"], "secret", errors)
        if body.get("secret") is not None
        else generate_secret()
    )
    basic_auth = check_basic_auth(body.get("basicAuth"), "basicAuth", errors)
    await _check_catalog(request, patterns, body.get("eventTypes"), errors)
    url = await _check_url(request, body["url"], errors) if "url" in body else None
    if errors:
        raise invalid(errors)
    assert url and patterns and secret is not None and description is not None
    reg = await request.app[STORE].create_registration(
        partner_id=partner_id_of(request),
        url=url,
        event_types=patterns,
        description=description,
        secret=secret,
        basic_auth=basic_auth,
    )
    return json_response(
        registration_json(reg, with_secret=True),
        status=201,
        headers={"Location": f"/webhooks/v1/registrations/{reg.id}"},
    )


@routes.get("/webhooks/v1/registrations")
async def list_registrations(request: web.Request) -> web.Response:
    regs = await request.app[STORE].list_registrations(partner_id_of(request))
    return json_response({"data": [registration_json(r) for r in regs]})


@routes.get("/webhooks/v1/registrations/{id}")
async def get_registration(request: web.Request) -> web.Response:
    return json_response(registration_json(await _get_or_404(request)))


@routes.patch("/webhooks/v1/registrations/{id}")
async def update_registration(request: web.Request) -> web.Response:
    reg_id = _registration_id(request)
    errors: list[FieldError] = []
    body = require_object(
        await read_json(request), {"url", "eventTypes", "description", "basicAuth"}, errors
    )
    patterns = (
        check_event_type_list(body["eventTypes"], "eventTypes", errors)
        if "eventTypes" in body
        else None
    )
    description = (
        check_text(body["description"], "description", errors, max_len=MAX_DESCRIPTION_LENGTH)
        if "description" in body
        else None
    )
    basic_auth = check_basic_auth(body.get("basicAuth"), "basicAuth", errors)
    await _check_catalog(request, patterns, body.get("eventTypes"), errors)
    url = await _check_url(request, body["url"], errors) if "url" in body else None
    if errors:
        raise invalid(errors)
    reg = await request.app[STORE].update_registration(
        reg_id,
        partner_id_of(request),
        url=url,
        event_types=patterns,
        description=description,
        set_basic_auth="basicAuth" in body,
        basic_auth=basic_auth,
    )
    if reg is None:
        raise not_found("registration")
    return json_response(registration_json(reg))


async def _transition(
    request: web.Request, trigger: Trigger, *, resend_failed: bool = False
) -> Registration:
    reg = await request.app[STORE].transition(
        _registration_id(request),
        partner_id_of(request),
        trigger,
        resend_failed=resend_failed,
    )
    if reg is None:
        raise not_found("registration")
    metrics.REGISTRATION_TRANSITIONS.labels(to=reg.status.value).inc()
    log.info(
        "registration %s is now %s (partner %s)",
        reg.id,
        reg.status.value,
        trigger.value,
        extra={
            "registration_id": reg.id,
            "partner_id": reg.partner_id,
            "to_status": reg.status.value,
        },
    )
    return reg


async def _optional_body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    """Lifecycle calls take an optional JSON body; an empty one means the defaults."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    errors: list[FieldError] = []
    body = require_object(parse_json(raw), allowed, errors)
    if errors:
        raise invalid(errors)
    return body


@routes.delete("/webhooks/v1/registrations/{id}")
async def delete_registration(request: web.Request) -> web.Response:
    await _transition(request, Trigger.DELETE)
    return web.Response(status=204)


@routes.post("/webhooks/v1/registrations/{id}/restart")
async def restart_registration(request: web.Request) -> web.Response:
    body = await _optional_body(request, {"resendFailed"})
    resend_failed = body.get("resendFailed", False)
    if not isinstance(resend_failed, bool):
        raise invalid([FieldError(field="resendFailed", message="must be true or false")])
    reg = await _transition(request, Trigger.RESTART, resend_failed=resend_failed)
    return json_response(registration_json(reg))


@routes.post("/webhooks/v1/registrations/{id}/pause")
async def pause_registration(request: web.Request) -> web.Response:
    await _optional_body(request, {"reason"})
    return json_response(registration_json(await _transition(request, Trigger.PAUSE)))


@routes.post("/webhooks/v1/registrations/{id}/unpause")
async def unpause_registration(request: web.Request) -> web.Response:
    await _optional_body(request, set())
    return json_response(registration_json(await _transition(request, Trigger.UNPAUSE)))


@routes.post("/webhooks/v1/registrations/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    body = await _optional_body(request, {"graceSeconds", "secret"})
    errors: list[FieldError] = []
    grace = body.get("graceSeconds", 86400)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= MAX_GRACE_SECONDS:
        errors.append(
            FieldError(field="graceSeconds", message=f"must be an integer 0..{MAX_GRACE_SECONDS}")
        )
    secret = (
        check_secret(body["secret"], "secret", errors)
        if body.get("secret") is not None
        else generate_secret()
    )
    if errors:
        raise invalid(errors)
    assert secret is not None
    reg = await request.app[STORE].rotate_secret(
        _registration_id(request),
        partner_id_of(request),
        secret,
        grace,
    )
    if reg is None:
        raise not_found("registration")
    return json_response({"secret": reg.secret})


@routes.post("/webhooks/v1/registrations/{id}/test")
async def test_registration(request: web.Request) -> web.Response:
    """One synchronous, signed ``test.event`` delivery; recorded, changing no status."""
    await _optional_body(request, set())
    reg = await _get_usable(request, "test")
    settings = request.app[SETTINGS]
    event_id = uuid7()
    attempted_at = utcnow()
    body = event_body(
        event_id=event_id,
        event_name="test.event",
        partner_id=reg.partner_id,
        registration_id=reg.id,
        created_at=attempted_at,
        previous_attempted_at=None,
        resources=[],
    )
    live = [reg.secret]
    if (
        reg.previous_secret
        and reg.previous_secret_expires_at
        and (reg.previous_secret_expires_at.timestamp() > time.time())
    ):
        live.append(reg.previous_secret)
    outcome = await send(
        request.app[HTTP_SESSION],
        url=reg.url,
        msg_id=str(event_id),
        body=body,
        secrets=live,
        basic_auth=reg.basic_auth,
        timeout=settings.delivery_timeout_seconds,
    )
    attempt = Attempt(
        event_id=event_id,
        attempt_number=1,
        attempted_at=attempted_at,
        duration_ms=outcome.duration_ms,
        response_status=outcome.status,
        error=outcome.error,
        response_body=outcome.body,
    )
    await request.app[STORE].record_test_delivery(
        event_id=event_id,
        partner_id=reg.partner_id,
        registration_id=reg.id,
        success=outcome.success,
        attempt=attempt,
    )
    return json_response(
        {"success": outcome.success, "eventId": str(event_id), "attempt": attempt_json(attempt)}
    )
