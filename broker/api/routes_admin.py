"""Admin API: partners, their keys, producer keys and the event-type catalog."""

from __future__ import annotations

from aiohttp import web

from broker.api.appkeys import STORE
from broker.api.problems import invalid, not_found
from broker.api.serialize import event_type_json, json_response, partner_json
from broker.api.validation import (
    EVENT_TYPE_NAME,
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    check_text,
    read_json,
    require_object,
)
from broker.domain.errors import FieldError
from broker.domain.ids import format_time, parse_uuid

routes = web.RouteTableDef()


async def _named_body(request: web.Request) -> str:
    errors: list[FieldError] = []
    body = require_object(await read_json(request), {"name"}, errors)
    name = check_text(body.get("name"), "name", errors, min_len=1, max_len=MAX_NAME_LENGTH)
    if name is not None and not name.strip():
        errors.append(FieldError(field="name", message="must not be blank"))
    if errors:
        raise invalid(errors)
    assert name is not None
    return name.strip()


@routes.post("/admin/v1/partners")
async def create_partner(request: web.Request) -> web.Response:
    name = await _named_body(request)
    partner, key = await request.app[STORE].create_partner(name)
    return json_response({**partner_json(partner), "apiKey": key.api_key}, status=201)


@routes.get("/admin/v1/partners")
async def list_partners(request: web.Request) -> web.Response:
    partners = await request.app[STORE].list_partners()
    return json_response({"data": [partner_json(p) for p in partners]})


@routes.post("/admin/v1/partners/{id}/keys")
async def create_partner_key(request: web.Request) -> web.Response:
    partner_id = parse_uuid(request.match_info["id"])
    key = None if partner_id is None else await request.app[STORE].create_partner_key(partner_id)
    if key is None:
        raise not_found("partner")
    return json_response(
        {"id": str(key.id), "apiKey": key.api_key, "createdAt": format_time(key.created_at)},
        status=201,
    )


@routes.delete("/admin/v1/keys/{keyId}")
async def revoke_key(request: web.Request) -> web.Response:
    key_id = parse_uuid(request.match_info["keyId"])
    if key_id is None or not await request.app[STORE].revoke_key(key_id):
        raise not_found("key")
    return web.Response(status=204)


@routes.post("/admin/v1/producer-keys")
async def create_producer_key(request: web.Request) -> web.Response:
    name = await _named_body(request)
    key = await request.app[STORE].create_producer_key(name)
    return json_response(
        {
            "id": str(key.id),
            "name": key.name,
            "apiKey": key.api_key,
            "createdAt": format_time(key.created_at),
        },
        status=201,
    )


@routes.put("/admin/v1/event-types/{name}")
async def put_event_type(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    errors: list[FieldError] = []
    if not EVENT_TYPE_NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        errors.append(
            FieldError(
                field="name",
                message="must match ^[A-Za-z][A-Za-z0-9_]*(\\.[A-Za-z][A-Za-z0-9_]*)+$",
            )
        )
    body = require_object(await read_json(request), {"description"}, errors)
    description = body.get("description", "")
    description = check_text(description, "description", errors, max_len=MAX_DESCRIPTION_LENGTH)
    if errors:
        raise invalid(errors)
    assert description is not None
    event_type, created = await request.app[STORE].put_event_type(name, description)
    return json_response(event_type_json(event_type), status=201 if created else 200)


@routes.get("/admin/v1/event-types")
async def list_event_types(request: web.Request) -> web.Response:
    types = await request.app[STORE].list_event_types()
    return json_response({"data": [event_type_json(t) for t in types]})
