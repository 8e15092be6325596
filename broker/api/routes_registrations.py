"""Partner API: registrations and their lifecycle (restart, pause, unpause, delete, test, rotate)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from aiohttp import web
from pydantic import TypeAdapter

from broker import metrics
from broker.api.appkeys import HTTP_SESSION, SETTINGS, STORE
from broker.api.auth import partner_id_of
from broker.api.paging import PAGE_PARAMS as _PAGE_PARAMS
from broker.api.paging import page_cursor, page_limit, page_of, query_errors
from broker.api.policy_body import check_secret, merged_policy, names_policy
from broker.api.problems import Problem, invalid, not_found, too_many_requests
from broker.api.schema import (
    REPLAY_MAX_EVENTS,
    EmptyRequest,
    PauseRequest,
    RegistrationCreate,
    RegistrationCreated,
    RegistrationList,
    RegistrationUpdate,
    ReplayRequest,
    ReplayResult,
    RestartRequest,
    RotateResult,
    RotateSecretRequest,
    TestResult,
    adapter,
)
from broker.api.schema import Registration as RegistrationOut
from broker.api.serialize import json_response
from broker.api.validation import check, exact_names, read_body, read_model
from broker.crypto import UnreadableSecret
from broker.domain.errors import FieldError
from broker.domain.ids import parse_uuid, utcnow, uuid7, uuid7_time
from broker.domain.models import Attempt, Registration
from broker.domain.payload import event_body
from broker.domain.policy import DEFAULT_POLICY, policy_defaults, resolve
from broker.domain.signing import generate_secret
from broker.domain.states import Status, Trigger
from broker.http.addresses import UrlRefused, validate_callback_url
from broker.http.sender import send, unreadable_secret
from broker.store.limits import Bucket
from broker.store.registrations import StaleRegistration
from broker.store.replay import ReplayInterrupted, ReplayTooLarge

routes = web.RouteTableDef()
log = logging.getLogger(__name__)


_CREATE = adapter(RegistrationCreate)
_UPDATE = adapter(RegistrationUpdate)
_RESTART = adapter(RestartRequest)
_PAUSE = adapter(PauseRequest)
_EMPTY = adapter(EmptyRequest)
_ROTATE = adapter(RotateSecretRequest)
_REPLAY = adapter(ReplayRequest)


async def _check_url(request: web.Request, url: str | None, errors: list[FieldError]) -> str | None:
    """The callback URL as it will be called, or None with the reason in ``errors``."""
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
    request: web.Request, patterns: list[str] | None, errors: list[FieldError]
) -> None:
    """Exact names must be in the catalog; errors index the list as the partner sent it."""
    if not patterns:
        return
    unknown = await request.app[STORE].unknown_event_types(exact_names(patterns))
    for i, pattern in enumerate(patterns):
        if pattern in unknown:
            errors.append(
                FieldError(field=f"eventTypes[{i}]", message=f"unknown event type {pattern}")
            )


async def _read_registration(
    request: web.Request, model: TypeAdapter[Any]
) -> tuple[Any, str | None, list[str] | None]:
    """A create or update body, checked whole: its model, then the callback URL (resolved, no
    private addresses) and the catalog, also when other fields already failed, so one 400
    names every bad field. Returns the body, the checked URL and the de-duplicated patterns."""
    raw = await read_body(request)
    body, errors = check(model, raw)
    if body is not None:
        url, patterns = body.url, body.event_types
    else:  # check the fields that passed their model as they were sent
        sent = orjson.loads(raw)
        failed = {e.field.partition("[")[0] for e in errors}
        url = sent.get("url") if isinstance(sent, dict) and "url" not in failed else None
        patterns = (
            sent.get("eventTypes")
            if isinstance(sent, dict) and "eventTypes" not in failed
            else None
        )
    await _check_catalog(request, patterns, errors)
    checked_url = await _check_url(request, url, errors)
    if errors:
        raise invalid(errors)
    return body, checked_url, list(dict.fromkeys(patterns)) if patterns is not None else None


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
        raise _deleted_conflict(f"cannot {action} a registration whose status is Deleted")
    raise not_found("registration")


@routes.post("/webhooks/v1/registrations")
async def create_registration(request: web.Request) -> web.Response:
    body, url, patterns = await _read_registration(request, _CREATE)
    assert url is not None and patterns is not None
    errors: list[FieldError] = []
    policy = merged_policy(body, DEFAULT_POLICY, errors)
    # A generated whsec_ secret suits every scheme; a given one must suit the chosen scheme.
    if policy is not None and body.secret is not None:
        check_secret(policy, body.secret, "secret", errors)
    if errors:
        raise invalid(errors)
    assert policy is not None
    secret = body.secret or generate_secret()
    reg = await request.app[STORE].create_registration(
        partner_id=partner_id_of(request),
        url=url,
        event_types=patterns,
        description=body.description,
        secret=secret,
        basic_auth=body.basic_auth,
        max_live=request.app[SETTINGS].max_registrations_per_partner,
        policy=policy,
    )
    return json_response(
        # The store keeps the secret sealed and never hands it back: shown from what was chosen.
        RegistrationCreated(**dict(RegistrationOut.model_validate(reg)), secret=secret),
        status=201,
        headers={"Location": f"/webhooks/v1/registrations/{reg.id}"},
    )


@routes.get("/webhooks/v1/registrations")
async def list_registrations(request: web.Request) -> web.Response:
    errors = query_errors(request.query, _PAGE_PARAMS)
    limit, after = page_limit(request.query, errors), page_cursor(request.query, errors)
    if errors:
        raise invalid(errors)
    regs = await request.app[STORE].list_registrations(
        partner_id_of(request), after=after, limit=limit + 1
    )
    return json_response(RegistrationList.model_validate(page_of(regs, limit)))


@routes.get("/webhooks/v1/registrations/{id}")
async def get_registration(request: web.Request) -> web.Response:
    return json_response(RegistrationOut.model_validate(await _get_or_404(request)))


@routes.patch("/webhooks/v1/registrations/{id}")
async def update_registration(request: web.Request) -> web.Response:
    reg_id = _registration_id(request)
    body, url, patterns = await _read_registration(request, _UPDATE)
    for _ in range(5):  # a policy change merges into the stored one; again if that moved
        policy = merged_from = None
        if names_policy(body):
            current = await _get_usable(request, "update")
            errors: list[FieldError] = []
            policy = merged_policy(body, current.policy, errors)
            if policy is not None and "signature" in body.model_fields_set:
                # The stored secret must suit the new scheme: opened for this check only.
                target = await request.app[STORE].delivery_target(current.id)
                if target is not None:
                    check_secret(policy, target.secrets[0], "signature.scheme", errors)
            if errors:
                raise invalid(errors)
            merged_from = current.updated_at
        try:
            reg = await request.app[STORE].update_registration(
                reg_id,
                partner_id_of(request),
                url=url,
                event_types=patterns,
                description=body.description,
                set_basic_auth="basic_auth" in body.model_fields_set,
                basic_auth=body.basic_auth,
                policy=policy,
                merged_from=merged_from,
            )
        except StaleRegistration:
            continue
        if reg is None:
            raise not_found("registration")
        return json_response(RegistrationOut.model_validate(reg))
    raise Problem(409, "Conflict", "the registration kept changing; send the PATCH again")


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


@routes.delete("/webhooks/v1/registrations/{id}")
async def delete_registration(request: web.Request) -> web.Response:
    await _transition(request, Trigger.DELETE)
    return web.Response(status=204)


@routes.post("/webhooks/v1/registrations/{id}/restart")
async def restart_registration(request: web.Request) -> web.Response:
    body: RestartRequest = await read_model(request, _RESTART, optional=True)
    reg = await _transition(request, Trigger.RESTART, resend_failed=body.resend_failed)
    return json_response(RegistrationOut.model_validate(reg))


@routes.post("/webhooks/v1/registrations/{id}/pause")
async def pause_registration(request: web.Request) -> web.Response:
    await read_model(request, _PAUSE, optional=True)
    return json_response(RegistrationOut.model_validate(await _transition(request, Trigger.PAUSE)))


@routes.post("/webhooks/v1/registrations/{id}/unpause")
async def unpause_registration(request: web.Request) -> web.Response:
    await read_model(request, _EMPTY, optional=True)
    reg = await _transition(request, Trigger.UNPAUSE)
    return json_response(RegistrationOut.model_validate(reg))


@routes.post("/webhooks/v1/registrations/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    body: RotateSecretRequest = await read_model(request, _ROTATE, optional=True)
    if body.secret is not None:  # it must suit the registration's signature scheme
        current = await _get_usable(request, "rotate the secret of")
        errors: list[FieldError] = []
        if not check_secret(current.policy, body.secret, "secret", errors):
            raise invalid(errors)
    secret = body.secret or generate_secret()
    reg = await request.app[STORE].rotate_secret(
        _registration_id(request), partner_id_of(request), secret, body.grace_seconds
    )
    if reg is None:
        raise not_found("registration")
    return json_response(RotateResult(secret=secret))


async def _limit_test_deliveries(request: web.Request, reg: Registration) -> None:
    """Each /test is a synchronous outbound POST: limited per registration (the contract's 1 per
    second, burst 5, by default) and per partner (BROKER_TEST_DELIVERY_PARTNER_RATE), so that
    many registrations cannot make the broker an amplifier. Both buckets are taken together or not at all, in PostgreSQL, so the
    limits hold across API processes."""
    settings = request.app[SETTINGS]
    buckets = [
        Bucket(
            key=f"test:registration:{reg.id}",
            rate=settings.test_delivery_registration_rate,
            burst=settings.test_delivery_registration_burst,
            name=(
                f"test deliveries are limited to {settings.test_delivery_registration_rate:g} "
                f"per second per registration (burst {settings.test_delivery_registration_burst})"
            ),
        )
    ]
    if settings.test_delivery_partner_rate:
        buckets.append(
            Bucket(
                key=f"test:partner:{reg.partner_id}",
                rate=settings.test_delivery_partner_rate,
                burst=settings.test_delivery_partner_burst,
                name=(
                    f"test deliveries are limited to {settings.test_delivery_partner_rate:g} "
                    f"per second per partner (burst {settings.test_delivery_partner_burst})"
                ),
            )
        )
    refused = await request.app[STORE].take_tokens(buckets)
    if refused:
        bucket, wait = max(refused, key=lambda r: r[1])
        raise too_many_requests(bucket.name, wait)


@routes.post("/webhooks/v1/registrations/{id}/test")
async def test_registration(request: web.Request) -> web.Response:
    """One synchronous, signed ``test.event`` delivery; recorded, changing no status."""
    await read_model(request, _EMPTY, optional=True)
    reg = await _get_usable(request, "test")
    settings = request.app[SETTINGS]
    await _limit_test_deliveries(request, reg)
    event_id = uuid7()
    attempted_at = utcnow()
    body = event_body(
        event_id=event_id,
        event_name="test.event",
        partner_id=reg.partner_id,
        registration_id=reg.id,
        created_at=uuid7_time(event_id),  # what the stored row's createdAt will say
        previous_attempted_at=None,
        resources=[],
    )
    # The registration's own timeout, signature scheme and headers, as a real delivery gets.
    policy = resolve(reg.policy, policy_defaults(settings))
    try:
        target = await request.app[STORE].delivery_target(reg.id)
    except UnreadableSecret as exc:
        # Stored data the key ring cannot open (altered in the database): nothing is sent
        # unsigned. Answered and recorded like a delivery's attempt, with the repair in it.
        log.error("test delivery not sent: %s", exc)
        outcome = unreadable_secret()
    else:
        if target is None:  # gone between the two reads
            raise not_found("registration")
        outcome = await send(
            request.app[HTTP_SESSION],
            url=target.url,
            msg_id=str(event_id),
            body=body,
            secrets=target.secrets,
            basic_auth=target.basic_auth,
            timeout=policy.timeout_seconds,
            signature=policy.signature,
            extra_headers=policy.headers,
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
    _, moved = await request.app[STORE].record_test_delivery(
        event_id=event_id,
        partner_id=reg.partner_id,
        registration_id=reg.id,
        success=outcome.success,
        attempt=attempt,
    )
    if moved is not None:  # the failure reached suspendAfterConsecutiveFailures
        metrics.REGISTRATION_TRANSITIONS.labels(to=moved.value).inc()
        log.warning(
            "registration %s is now %s (%d consecutive failures, test delivery included)",
            reg.id,
            moved.value,
            reg.policy.delivery.suspend_after_consecutive_failures or 0,
            extra={"registration_id": reg.id, "partner_id": reg.partner_id, "to_status": moved},
        )
    return json_response(
        TestResult.model_validate(
            {"success": outcome.success, "event_id": event_id, "attempt": attempt}
        )
    )


def _deleted_conflict(detail: str) -> Problem:
    return Problem(
        409,
        "Conflict",
        detail,
        slug="invalid-transition",
        extra={"currentStatus": Status.DELETED.value},
    )


@routes.post("/webhooks/v1/registrations/{id}/replay")
async def replay_registration(request: web.Request) -> web.Response:
    """Its Failed and/or Success event objects of [since, until) are Pending again (202)."""
    body: ReplayRequest = await read_model(request, _REPLAY)
    until = body.until or utcnow()
    if body.since >= until:
        field = "until" if body.until is not None else "since"
        message = "must be later than since" if body.until else "must be in the past"
        raise invalid([FieldError(field=field, message=message)])
    reg = await _get_usable(request, "replay")
    try:
        requeued = await request.app[STORE].replay_events(
            reg.id,
            reg.partner_id,
            since=body.since,
            until=until,
            statuses=list(dict.fromkeys(body.status)),
            limit=REPLAY_MAX_EVENTS,
        )
    except ReplayTooLarge as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            f"{exc.count} event objects match; a replay queues at most {exc.limit}: "
            "narrow since/until or status",
            slug="replay-too-large",
            extra={"count": exc.count, "limit": exc.limit},
        ) from None
    except ReplayInterrupted as exc:
        raise _deleted_conflict(
            f"the registration was deleted during the replay ({exc.requeued} event objects "
            "had been queued; the delete discarded them with the rest of its queue)"
        ) from None
    log.info(
        "registration %s: %d event objects replayed",
        reg.id,
        requeued,
        extra={"registration_id": reg.id, "partner_id": reg.partner_id},
    )
    return json_response(ReplayResult(requeued=requeued), status=202)
