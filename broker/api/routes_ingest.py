"""Producer API: ``POST /internal/v1/resource-events``.

All or nothing: the body is checked completely (shape, then partners and event types against the
store) before anything is written, and a 400 names every bad item. The write goes through the
group-commit batcher, so 202 means the rows are committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from broker.api.appkeys import INGEST, PRINCIPAL, SETTINGS, STORE
from broker.api.problems import invalid, too_many_requests
from broker.api.schema import IDEMPOTENCY_KEY_MAX_LENGTH, RESOURCE_EVENT_BATCH
from broker.api.serialize import json_response
from broker.api.validation import Reference, check, read_body, references, resource_events
from broker.domain.errors import FieldError
from broker.domain.models import ResourceEvent
from broker.domain.operational import is_operational
from broker.store.limits import Bucket
from broker.store.store import IngestRequest

routes = web.RouteTableDef()


async def _rate_limit(request: web.Request) -> None:
    """The producer key's token bucket (burst: two seconds' worth), shared by every API process
    through the store, so that N processes do not allow N times the rate."""
    rate = request.app[SETTINGS].ingest_rate_limit
    if not rate:
        return
    bucket = Bucket(key=f"ingest:{request[PRINCIPAL].key_id}", rate=rate, burst=max(1.0, rate * 2))
    for _, wait in await request.app[STORE].take_tokens([bucket]):
        raise too_many_requests(
            f"this producer key is limited to {rate:g} requests per second "
            "(BROKER_INGEST_RATE_LIMIT)",
            wait,
        )


@routes.post("/internal/v1/resource-events")
async def ingest(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    await _rate_limit(request)
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not (
        1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_LENGTH and idempotency_key.isprintable()
    ):
        raise invalid(
            [
                FieldError(
                    field="Idempotency-Key",
                    message=f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable characters",
                )
            ]
        )
    raw = await read_body(request, limit=settings.ingest_max_body_bytes)
    batch, errors = check(RESOURCE_EVENT_BATCH, raw)
    if batch is not None and len(batch.events) > settings.ingest_max_events:
        errors.append(
            FieldError(
                field="events",
                message=f"must be a list of 1 to {settings.ingest_max_events} items",
            )
        )
    items = resource_events(batch.events) if batch is not None and not errors else []
    if items:
        errors = await _reference_errors(request, items)
    elif errors:  # name unknown partners and event types of the other items too
        errors.extend(await _reference_errors(request, references(raw)))
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


async def _reference_errors(
    request: web.Request, refs: Sequence[ResourceEvent | Reference]
) -> list[FieldError]:
    """Items naming a partner or event type the store does not know (indexed as sent)."""
    store = request.app[STORE]
    unknown_partners = await store.unknown_partners(
        {r.partner_id for r in refs if r.partner_id is not None}
    )
    unknown_types = await store.unknown_event_types(
        {r.event_name for r in refs if r.event_name is not None}
    )
    reserved = {r.event_name for r in refs if r.event_name and is_operational(r.event_name)}
    errors: list[FieldError] = []
    if not unknown_partners and not unknown_types and not reserved:
        return errors
    for position, ref in enumerate(refs):
        index = ref.position if isinstance(ref, Reference) else position
        partner, name = ref.partner_id, ref.event_name
        if partner in unknown_partners:
            errors.append(FieldError(field=f"events[{index}].partnerId", message="unknown partner"))
        if name in unknown_types:
            errors.append(
                FieldError(field=f"events[{index}].eventName", message="unknown event type")
            )
        elif name in reserved:  # only the broker emits its operational events
            errors.append(
                FieldError(
                    field=f"events[{index}].eventName",
                    message=f"{name} is an operational event: only the broker emits it",
                )
            )
    return errors


def _error_order(error: FieldError) -> tuple[int, str]:
    if error.field.startswith("events["):
        return int(error.field[7 : error.field.index("]")]), error.field
    return -1, error.field
