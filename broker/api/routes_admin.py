"""Admin API: partners, their keys, producer keys and the event-type catalog."""

from __future__ import annotations

from aiohttp import web

from broker.api.appkeys import STORE
from broker.api.paging import PAGE_PARAMS, page_cursor, page_limit, page_of, query_errors
from broker.api.problems import Problem, invalid, not_found
from broker.api.schema import (
    EVENT_NAME,
    EventType,
    EventTypeList,
    EventTypeUpsert,
    Key,
    PartnerCreate,
    PartnerCreated,
    PartnerList,
    ProducerKey,
    ProducerKeyCreate,
    adapter,
    check_value,
)
from broker.api.serialize import json_response
from broker.api.validation import read_model
from broker.domain.errors import FieldError
from broker.domain.ids import parse_uuid
from broker.domain.operational import PREFIX as OPERATIONAL_PREFIX
from broker.domain.operational import is_operational

routes = web.RouteTableDef()


_PARTNER_CREATE = adapter(PartnerCreate)
_PRODUCER_KEY_CREATE = adapter(ProducerKeyCreate)
_EVENT_TYPE_UPSERT = adapter(EventTypeUpsert)


@routes.post("/admin/v1/partners")
async def create_partner(request: web.Request) -> web.Response:
    body: PartnerCreate = await read_model(request, _PARTNER_CREATE)
    partner, key = await request.app[STORE].create_partner(body.name)
    return json_response(
        PartnerCreated(
            id=partner.id, name=partner.name, created_at=partner.created_at, api_key=key.api_key
        ),
        status=201,
    )


@routes.get("/admin/v1/partners")
async def list_partners(request: web.Request) -> web.Response:
    errors = query_errors(request.query, PAGE_PARAMS)
    limit, after = page_limit(request.query, errors), page_cursor(request.query, errors)
    if errors:
        raise invalid(errors)
    partners = await request.app[STORE].list_partners(after=after, limit=limit + 1)
    return json_response(PartnerList.model_validate(page_of(partners, limit)))


@routes.post("/admin/v1/partners/{id}/keys")
async def create_partner_key(request: web.Request) -> web.Response:
    partner_id = parse_uuid(request.match_info["id"])
    key = None if partner_id is None else await request.app[STORE].create_partner_key(partner_id)
    if key is None:
        raise not_found("partner")
    return json_response(Key.model_validate(key), status=201)


@routes.delete("/admin/v1/keys/{keyId}")
async def revoke_key(request: web.Request) -> web.Response:
    key_id = parse_uuid(request.match_info["keyId"])
    if key_id is None or not await request.app[STORE].revoke_key(key_id):
        raise not_found("key")
    return web.Response(status=204)


@routes.post("/admin/v1/producer-keys")
async def create_producer_key(request: web.Request) -> web.Response:
    body: ProducerKeyCreate = await read_model(request, _PRODUCER_KEY_CREATE)
    key = await request.app[STORE].create_producer_key(body.name)
    return json_response(ProducerKey.model_validate(key), status=201)


@routes.put("/admin/v1/event-types/{name}")
async def put_event_type(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    errors = check_value(EVENT_NAME, name, "name")
    if not errors and is_operational(name):
        errors.append(
            FieldError(
                field="name",
                message=f"the {OPERATIONAL_PREFIX} prefix is reserved for the broker's "
                "operational events",
            )
        )
    body: EventTypeUpsert | None = None
    try:
        body = await read_model(request, _EVENT_TYPE_UPSERT)
    except Problem as problem:
        if problem.errors is None or not errors:
            raise
        errors.extend(problem.errors)  # name every bad field, the path's and the body's
    if errors:
        raise invalid(errors)
    assert body is not None
    event_type, created = await request.app[STORE].put_event_type(name, body.description)
    return json_response(EventType.model_validate(event_type), status=201 if created else 200)


@routes.get("/admin/v1/event-types")
async def list_event_types(request: web.Request) -> web.Response:
    types = await request.app[STORE].list_event_types()
    return json_response(EventTypeList.model_validate({"data": types}))
