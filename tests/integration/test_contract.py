"""What the handlers accept and return is what ``/openapi.json`` says, for every route.

Real requests go through the app (every operation, its success and its usual failures); a
middleware records each exchange by route template, and each one is checked against the document
the same server serves: the status is documented for that operation, the body matches the
documented schema for that status and content type, and a request body the server accepted is
one the document accepts. Finally every operation of the document must have been seen succeeding,
and every route of the app must be in the document. (schemathesis, in test_fuzz.py, explores the
inputs; this test pins the shapes on known traffic.)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.api.app import create_app
from broker.runtime import running
from tests.conftest import admin_headers, bearer, make_settings

REG = "/webhooks/v1/registrations"


@dataclass
class Exchange:
    method: str
    template: str
    status: int
    content_type: str
    request_body: bytes
    body: bytes


def recorder(seen: list[Exchange]) -> Any:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        info = request.match_info.route.resource
        template = info.canonical if info is not None else request.path
        payload = response.body if isinstance(response, web.Response) else b""
        seen.append(
            Exchange(
                request.method,
                template,
                response.status,
                response.content_type,
                b"",  # filled in from the client's side (the handler consumes the stream)
                payload if isinstance(payload, bytes) else b"",
            )
        )
        return response

    return record


class RecordingClient(TestClient):  # type: ignore[type-arg]
    """Keeps the body of every request sent, in order (one request at a time here)."""

    sent: list[bytes]

    async def _request(self, method: str, path: Any, **kwargs: Any) -> Any:
        if "json" in kwargs:
            body = json.dumps(kwargs["json"]).encode()
        else:
            body = kwargs.get("data") or b""
        self.sent.append(body)
        return await super()._request(method, path, **kwargs)


def validator_for(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "components": doc["components"],
    }
    return jsonschema_rs.validator_for(root, validate_formats=True)


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


async def exercise(client: TestClient, receiver_url: str, db: Any) -> None:
    """One pass over the API: every operation succeeds at least once, and fails in its usual
    ways (bad input, unknown id, wrong key, wrong state)."""
    admin = admin_headers()
    c = client
    # admin
    created = await (
        await c.post("/admin/v1/partners", json={"name": "Acme"}, headers=admin)
    ).json()
    partner = bearer(created["apiKey"])
    await c.post("/admin/v1/partners", json={"name": " "}, headers=admin)
    await c.get("/admin/v1/partners", headers=admin)
    await c.get("/admin/v1/partners", headers=partner)  # 403
    key = await (await c.post(f"/admin/v1/partners/{created['id']}/keys", headers=admin)).json()
    await c.post("/admin/v1/partners/00000000-0000-0000-0000-000000000000/keys", headers=admin)
    await c.delete(f"/admin/v1/keys/{key['id']}", headers=admin)
    await c.delete(f"/admin/v1/keys/{key['id']}", headers=admin)  # 404
    producer_key = await (
        await c.post("/admin/v1/producer-keys", json={"name": "core"}, headers=admin)
    ).json()
    producer = bearer(producer_key["apiKey"])
    name = "Core.Account.Opened"
    await c.put(f"/admin/v1/event-types/{name}", json={"description": "opened"}, headers=admin)
    await c.put(f"/admin/v1/event-types/{name}", json={}, headers=admin)
    await c.put("/admin/v1/event-types/nodots", json={"description": 5}, headers=admin)
    await c.get("/admin/v1/event-types", headers=admin)
    # partner: registrations
    reg = await (
        await c.post(REG, json={"url": receiver_url, "eventTypes": ["Core.*"]}, headers=partner)
    ).json()
    rid = reg["id"]
    await c.post(REG, json={"url": 5, "eventTypes": [], "colour": 1}, headers=partner)
    await c.post(REG, data=b"{", headers={**partner, "Content-Type": "application/json"})
    await c.post(REG, data=b"{}", headers={**partner, "Content-Type": "text/plain"})
    await c.get(REG, headers=partner)
    await c.get(REG, headers={"Authorization": "Bearer nope"})  # 401
    await c.get(f"{REG}/{rid}", headers=partner)
    await c.get(f"{REG}/00000000-0000-0000-0000-000000000000", headers=partner)
    await c.patch(f"{REG}/{rid}", json={"description": "d", "basicAuth": "u:p"}, headers=partner)
    await c.patch(f"{REG}/{rid}", json={"eventTypes": ["Nope.Thing"]}, headers=partner)
    await c.post(f"{REG}/{rid}/pause", json={"reason": "maintenance"}, headers=partner)
    await c.post(f"{REG}/{rid}/pause", headers=partner)  # 409: already paused
    await c.post(f"{REG}/{rid}/unpause", headers=partner)
    await c.post(f"{REG}/{rid}/restart", json={"resendFailed": "yes"}, headers=partner)
    await c.post(f"{REG}/{rid}/restart", headers=partner)  # 409: Active
    # as if deliveries had failed for good (the delivery tests cover how it gets there)
    await db.execute("UPDATE registrations SET status = 'Suspended' WHERE id = $1::uuid", rid)
    await c.post(f"{REG}/{rid}/restart", json={"resendFailed": True}, headers=partner)
    await c.post(f"{REG}/{rid}/rotate-secret", json={"graceSeconds": 60}, headers=partner)
    await c.post(f"{REG}/{rid}/rotate-secret", json={"graceSeconds": -1}, headers=partner)
    await c.post(f"{REG}/{rid}/test", headers=partner)
    await c.get(f"{REG}/{rid}/stats?period=1h", headers=partner)
    await c.get(f"{REG}/{rid}/stats?period=1y", headers=partner)
    # producer
    item = {"partnerId": created["id"], "eventName": name, "resource": "core/v1/accounts/1"}
    await c.post("/internal/v1/resource-events", json={"events": [item]}, headers=producer)
    await c.post(
        "/internal/v1/resource-events",
        json={"events": [item, {**item, "resource": "a b"}]},
        headers=producer,
    )
    await c.post("/internal/v1/resource-events", json={"events": [item]}, headers=partner)
    # events: the window closes (window_min_seconds below) and the worker delivers
    events: list[dict[str, Any]] = []
    for _ in range(100):
        page = await (await c.get("/webhooks/v1/events", headers=partner)).json()
        events = [e for e in page["data"] if e["eventName"] == name]
        if events:
            break
        await asyncio.sleep(0.1)
    assert events, "the window never closed"
    eid = events[0]["id"]
    await c.get("/webhooks/v1/events", params={"status": "Nope", "limit": "0"}, headers=partner)
    await c.get("/webhooks/v1/events", params={"limit": "1"}, headers=partner)
    await c.get(f"/webhooks/v1/events/{eid}", headers=partner)
    await c.get("/webhooks/v1/events/not-a-uuid", headers=partner)
    await c.get(f"/webhooks/v1/events/{eid}/attempts", headers=partner)
    await c.post(f"/webhooks/v1/events/{eid}/resend", headers=partner)
    await c.get("/webhooks/v1/event-types", headers=partner)
    since = {"since": "2026-01-01T00:00:00Z"}
    await c.post(f"{REG}/{rid}/replay", json={**since, "status": ["Failed"]}, headers=partner)
    await c.post(f"{REG}/{rid}/replay", json={**since, "status": ["Pending"]}, headers=partner)
    await c.delete(f"{REG}/{rid}", headers=partner)
    await c.post(f"{REG}/{rid}/test", headers=partner)  # 409: Deleted
    await c.post(f"{REG}/{rid}/replay", json=since, headers=partner)  # 409: Deleted
    # portal links
    links = f"/admin/v1/partners/{created['id']}/portal-links"
    await c.post(links, json={"ttlSeconds": 59}, headers=admin)  # 400
    link = await (await c.post(links, json={"readOnly": True}, headers=admin)).json()
    await c.get("/webhooks/v1/session", headers=bearer(link["token"]))
    await c.get("/webhooks/v1/session", headers=partner)
    await c.post(f"{REG}/{rid}/pause", headers=bearer(link["token"]))  # 403: read-only
    await c.delete(links, headers=admin)
    await c.delete("/admin/v1/partners/not-a-uuid/portal-links", headers=admin)  # 404
    # service
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        await c.get(path)
    await c.get("/no/such/route")


async def test_every_route_answers_what_the_document_says(db_url, db, receiver):
    seen: list[Exchange] = []
    settings = make_settings(window_min_seconds=0.2, window_max_seconds=0.5)
    async with running(settings, url=db_url, role="all") as runtime:
        app = create_app(runtime)
        app.middlewares.insert(0, recorder(seen))
        client = RecordingClient(TestServer(app))
        client.sent = []
        await client.start_server()
        try:
            await exercise(client, receiver.url, db)
            doc = await (await client.get("/openapi.json")).json()
        finally:
            await client.close()
    assert len(client.sent) == len(seen)
    for exchange, body in zip(seen, client.sent, strict=True):
        exchange.request_body = body

    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    succeeded: set[tuple[str, str]] = set()
    problems: list[str] = []
    for ex in seen:
        op_key = (ex.method, ex.template)
        if op_key not in documented:
            if ex.status != 404:  # an unknown route answers 404 problem+json; nothing else
                problems.append(f"{ex.method} {ex.template} is served but not documented")
            continue
        operation = doc["paths"][ex.template][ex.method.lower()]
        responses = operation["responses"]
        if str(ex.status) not in responses:
            problems.append(f"{ex.method} {ex.template} answered undocumented {ex.status}")
            continue
        if 200 <= ex.status < 300:
            succeeded.add(op_key)
            if ex.request_body.strip() and "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                sent = json.loads(ex.request_body)
                if not validator_for(doc, schema).is_valid(sent):
                    problems.append(f"{ex.method} {ex.template} accepted {sent}, the doc refuses")
        response = resolve(doc, responses[str(ex.status)])
        content = response.get("content", {})
        if not content:
            if ex.body:
                problems.append(f"{ex.method} {ex.template} {ex.status}: undocumented body")
            continue
        if ex.content_type not in content:
            problems.append(
                f"{ex.method} {ex.template} {ex.status}: {ex.content_type} not in {list(content)}"
            )
            continue
        schema = content[ex.content_type].get("schema")
        if schema is None or not ex.content_type.endswith("json"):
            continue
        body = json.loads(ex.body)
        errors = [e.message for e in validator_for(doc, schema).iter_errors(body)]
        if errors:
            problems.append(f"{ex.method} {ex.template} {ex.status}: {errors[:3]} in {body}")
    assert not problems, "\n".join(problems)
    assert documented - succeeded == set(), "never seen succeeding"
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith("/portal")
    }
    assert served - documented == set(), "served but not in the document"
