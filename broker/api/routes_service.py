"""Service endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from broker import __version__
from broker.api.appkeys import STORE
from broker.api.problems import Problem
from broker.api.serialize import json_response
from broker.config import Settings

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        ready = await request.app[STORE].ping()
    except Exception:
        ready = False
    if not ready:
        raise Problem(
            503,
            "Service Unavailable",
            "the database is unreachable or not migrated",
            headers={"Retry-After": "2"},
        )
    return json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    from broker.workers.gauges import scrape

    body = await scrape(request.app[STORE])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# The served document, built once per application (about 10 ms) from its settings.
OPENAPI_BODY = web.AppKey("openapi_body", bytes)


def openapi_body(settings: Settings) -> bytes:
    import orjson

    from broker.api.openapi import openapi_document

    return orjson.dumps(openapi_document(__version__, ingest_max_events=settings.ingest_max_events))


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_BODY], content_type="application/json")
