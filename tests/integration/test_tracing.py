"""Tracing: one resource event's spans link ingest → window close → delivery attempt (SDK
in-memory exporter), OTLP export when the endpoint is set, and a no-op without the extra."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker import tracing
from tests.conftest import ROOT, make_world, wait_until


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_one_resource_events_spans_link_ingest_close_and_delivery(
    spans, make_client, receiver, db
):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    await world.emit(["core/v1/dda/accounts/1"])
    await receiver.wait_for(1)

    async def attempted() -> bool:
        return bool(named(spans, "delivery.attempt"))

    await wait_until(attempted)
    (ingest,) = named(spans, "ingest")
    assert ingest.attributes["broker.partner_ids"] == (world.partner_id,)
    assert ingest.attributes["broker.resource_events"] == 1
    (close,) = named(spans, "window.close")
    (attempt,) = named(spans, "delivery.attempt")
    event_id = receiver.received[0].json()["id"]

    # ingest → close: the close links to the ingest commit that fed its window.
    assert [link.context.span_id for link in close.links] == [ingest.context.span_id]
    assert close.attributes["broker.partner_id"] == world.partner_id
    assert close.attributes["broker.event_ids"] == (event_id,)
    assert close.attributes["broker.registration_ids"] == (reg["id"],)
    # close → delivery: each attempt is a child of the close that made its event object.
    assert attempt.parent is not None
    assert attempt.parent.span_id == close.context.span_id
    assert attempt.context.trace_id == close.context.trace_id
    assert attempt.attributes["broker.event_id"] == event_id
    assert attempt.attributes["broker.registration_id"] == reg["id"]
    assert attempt.attributes["broker.partner_id"] == world.partner_id
    assert attempt.attributes["broker.success"] is True
    assert attempt.attributes["broker.response_status"] == 200
    # The context travelled in the rows.
    stored = await db.fetchval("SELECT trace_parent FROM events")
    assert stored.split("-")[1] == format(close.context.trace_id, "032x")


async def test_without_a_provider_nothing_is_traced_and_nothing_stored(make_client, receiver, db):
    client = await make_client(workers=True)
    world = await make_world(client)
    await world.register(receiver.url)
    await world.emit(["core/v1/dda/accounts/1"])
    await receiver.wait_for(1)
    assert not tracing.enabled()
    assert await db.fetchval("SELECT trace_parent FROM events") is None


def test_the_hooks_are_no_ops_when_opentelemetry_is_not_installed():
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from broker import tracing
with tracing.span("x", parent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", a=1) as s:
    tracing.set_attributes(b=2)
    assert s is None and tracing.current_traceparent() is None
assert tracing.configure() is False and not tracing.enabled()
print("ok")
"""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_spans_are_exported_over_otlp_when_the_endpoint_is_set(db_url):
    """A real ``broker serve`` with OTEL_EXPORTER_OTLP_ENDPOINT posts its spans to a collector."""
    posts: list[tuple[str, str, bytes]] = []
    arrived = asyncio.Event()

    async def collect(request: web.Request) -> web.Response:
        posts.append((request.path, request.content_type, await request.read()))
        arrived.set()
        return web.Response(status=200)

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    server = TestServer(collector, host="127.0.0.1")
    await server.start_server()
    from tests.acceptance.test_cli import free_port, serving

    port = free_port()
    env = {
        "BROKER_PORT": str(port),
        "BROKER_ADMIN_TOKEN": "otel-test-admin-token-123",
        "OTEL_EXPORTER_OTLP_ENDPOINT": str(server.make_url("")).rstrip("/"),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    try:
        async with serving(db_url, **env):
            import aiohttp

            async with aiohttp.ClientSession() as http:
                admin = {"Authorization": "Bearer otel-test-admin-token-123"}
                base = f"http://127.0.0.1:{port}"
                async with http.post(
                    base + "/admin/v1/producer-keys", json={"name": "p"}, headers=admin
                ) as resp:
                    producer = (await resp.json())["apiKey"]
                async with http.post(
                    base + "/admin/v1/partners", json={"name": "P"}, headers=admin
                ) as resp:
                    partner = (await resp.json())["id"]
                async with http.post(
                    base + "/internal/v1/resource-events",
                    json={
                        "events": [
                            {"partnerId": partner, "eventName": "test.event", "resource": "r/1"}
                        ]
                    },
                    headers={"Authorization": f"Bearer {producer}"},
                ) as resp:
                    assert resp.status == 202, await resp.text()
            await asyncio.wait_for(arrived.wait(), timeout=15)
    finally:
        await server.close()
    path, content_type, body = posts[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"ingest" in body  # the span name, in the protobuf payload
