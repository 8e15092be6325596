"""Response bodies: the store's value objects through their models in ``broker.api.schema``
(camelCase, RFC 3339 milliseconds), so what is sent is what ``/openapi.json`` declares."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel


def json_response(
    body: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = (
        body.__pydantic_serializer__.to_json(body, by_alias=True)
        if isinstance(body, BaseModel)
        else orjson.dumps(body)
    )
    return web.Response(status=status, body=data, content_type="application/json", headers=headers)
