"""Schemathesis fuzzes every operation of ``/openapi.json`` against a live server.

Positive (schema-valid) and negative (schema-invalid) inputs go to every operation with the right
kind of key; each response must be no 5xx and must match the document: a documented status, the
documented content type, the documented headers (Retry-After on 429/503), a body matching the
schema, and a 4xx for input the schema forbids. Operations that take an id are fuzzed both with
generated ids and with real ones, so the handlers behind the 404 are reached too.

Bounded for CI: ``BROKER_FUZZ_EXAMPLES`` (default 25) examples per operation and mode, the same
ones on every run unless ``BROKER_FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker import __version__
from broker.api.app import make_runner
from broker.api.openapi import openapi_document
from broker.config import Settings
from broker.runtime import running
from tests.conftest import ADMIN_TOKEN, make_settings, with_database

EXAMPLES = int(os.environ.get("BROKER_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

SCHEMA = schemathesis.openapi.from_dict(openapi_document(__version__))
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}


@dataclass
class Live:
    """The broker app served on 127.0.0.1 from a thread of its own, with one of everything."""

    url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)

    def headers_for(self, operation: Any) -> dict[str, str]:
        security = operation.definition.raw.get("security") or []
        if not security:
            return {}
        scheme = next(iter(security[0]))
        return {"Authorization": f"Bearer {self.keys[scheme]}"}

    def real_path_parameters(self, operation: Any) -> dict[str, str] | None:
        path = operation.path
        if "{" not in path:
            return None
        if path.startswith("/admin/v1/partners/"):
            return {"id": self.ids["partner"]}
        if path.startswith("/admin/v1/keys/"):
            return {"keyId": self.ids["spare_key"]}
        if path.startswith("/admin/v1/event-types/"):
            return {"name": "Core.Account.Opened"}
        if path == "/webhooks/v1/registrations/{id}" and operation.method.upper() == "DELETE":
            return {"id": self.ids["doomed_registration"]}  # the others keep theirs alive
        if path.startswith("/webhooks/v1/registrations/"):
            return {"id": self.ids["registration"]}
        if path.startswith("/webhooks/v1/events/"):
            return {"id": self.ids["event"]}
        return None


def _serve(settings: Settings, url: str, ready: threading.Event, box: dict[str, Any]) -> None:
    async def main() -> None:
        async with running(settings, url=url, role="all") as runtime:
            runner = make_runner(runtime)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            box["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            box["loop"] = asyncio.get_running_loop()
            stop: asyncio.Event = asyncio.Event()
            box["stop"] = stop
            ready.set()
            await stop.wait()
            await runner.cleanup()

    asyncio.run(main())


@pytest.fixture(scope="module")
def live(base_database_url: str, template_database: str) -> Iterator[Live]:
    name = f"broker_fuzz_{uuid.uuid4().hex[:12]}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(base_database_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(sql(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    # Production-like: private URLs refused; a short timeout bounds the synchronous test call.
    settings = make_settings(allow_private_urls=False, delivery_timeout_seconds=1.0)
    url = with_database(base_database_url, name)
    ready = threading.Event()
    box: dict[str, Any] = {}
    thread = threading.Thread(target=_serve, args=(settings, url, ready, box), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "server did not start"
        state = Live(url=f"http://127.0.0.1:{box['port']}")
        _populate(state)
        yield state
    finally:
        if "stop" in box:
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=30)
        asyncio.run(sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _populate(state: Live) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    http = requests.Session()
    partner = http.post(
        f"{state.url}/admin/v1/partners", json={"name": "Fuzz"}, headers=admin
    ).json()
    producer = http.post(
        f"{state.url}/admin/v1/producer-keys", json={"name": "fuzz"}, headers=admin
    ).json()
    spare = http.post(f"{state.url}/admin/v1/partners/{partner['id']}/keys", headers=admin).json()
    http.put(
        f"{state.url}/admin/v1/event-types/Core.Account.Opened",
        json={"description": "x"},
        headers=admin,
    ).raise_for_status()
    state.keys = {
        "adminToken": ADMIN_TOKEN,
        "producerKey": producer["apiKey"],
        "partnerKey": partner["apiKey"],
    }
    partner_auth = {"Authorization": f"Bearer {partner['apiKey']}"}
    # A public address that nothing answers on here: deliveries fail fast or time out in 1 s.
    reg = http.post(
        f"{state.url}/webhooks/v1/registrations",
        json={"url": "http://1.1.1.1/hook", "eventTypes": ["*"]},
        headers=partner_auth,
    )
    assert reg.status_code == 201, reg.text
    doomed = http.post(
        f"{state.url}/webhooks/v1/registrations",
        json={"url": "http://1.1.1.1/doomed", "eventTypes": ["*"]},
        headers=partner_auth,
    )
    assert doomed.status_code == 201, doomed.text
    tested = http.post(
        f"{state.url}/webhooks/v1/registrations/{reg.json()['id']}/test", headers=partner_auth
    )
    assert tested.status_code == 200, tested.text
    state.ids = {
        "partner": partner["id"],
        "spare_key": spare["id"],
        "registration": reg.json()["id"],
        "event": tested.json()["eventId"],
        "doomed_registration": doomed.json()["id"],
    }


def _steer(case: Any, live: Live) -> None:
    """Point a schema-valid body at things that exist (a known partner and event type, a public
    URL), so positive inputs also reach the success paths behind the reference checks."""
    body = case.body
    if not isinstance(body, dict):
        return
    if case.operation.path == "/internal/v1/resource-events":
        for item in body.get("events") or []:
            if isinstance(item, dict):
                item["partnerId"] = live.ids["partner"]
                item["eventName"] = "Core.Account.Opened"
    elif case.operation.path.startswith("/webhooks/v1/registrations"):
        if "url" in body:
            body["url"] = "http://1.1.1.1/fuzzed"
        if isinstance(body.get("eventTypes"), list):
            body["eventTypes"] = [
                p if p == "*" or p.endswith(".*") else "*" for p in body["eventTypes"]
            ]


def _strategy(operation: Any, mode: GenerationMode, path: dict[str, str] | None) -> Any:
    try:
        return operation.as_strategy(generation_mode=mode, path_parameters=path)
    except Exception:  # e.g. nothing left to negate once the path is fixed
        return None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_operation(live: Live, label: str, mode: GenerationMode) -> None:
    operation = OPERATIONS[label]
    strategies = [_strategy(operation, mode, None)]
    real = live.real_path_parameters(operation)
    if real is not None:
        strategies.append(_strategy(operation, mode, real))
    strategies = [s for s in strategies if s is not None]
    if not strategies:
        pytest.skip(f"no {mode} inputs for {label}")
    headers = live.headers_for(operation)
    http = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        # The same examples on every machine (a fresh one's `make test` as CI's); random
        # exploration with BROKER_FUZZ_RANDOM=1. Random runs found two things: a request line
        # past aiohttp's limit (fixed: SERVER_LIMITS) and a schemathesis false positive (a
        # negative case whose only violations, a dropped extra query key and the Authorization
        # header this test always sends, did not survive into the request).
        derandomize=not os.environ.get("BROKER_FUZZ_RANDOM"),
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=st.one_of(strategies), steer=st.booleans())
    def run(case: Any, steer: bool) -> None:
        if steer and mode is GenerationMode.POSITIVE:
            _steer(case, live)
        response = case.call(base_url=live.url, session=http, headers=headers, timeout=15)
        live.requests += 1
        live.statuses[response.status_code] = live.statuses.get(response.status_code, 0) + 1
        seen = live.by_operation.setdefault(f"{label} {mode}", {})
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    started = time.monotonic()
    try:
        run()
    except Unsatisfiable:
        takes_input = operation.definition.raw.get("parameters") or operation.definition.raw.get(
            "requestBody"
        )
        if takes_input or mode is GenerationMode.POSITIVE:
            raise
        pytest.skip(f"{label} takes no input, so nothing can be negated")
    assert time.monotonic() - started < 60


def test_fuzz_report(live: Live) -> None:
    """Runs after the fuzzing (same module): prints the figures for docs/reliability.md."""
    print(f"FUZZ-REPORT requests={live.requests} statuses={dict(sorted(live.statuses.items()))}")
    for name, seen in sorted(live.by_operation.items()):
        print(f"FUZZ-OPERATION {name}: {dict(sorted(seen.items()))}")
    assert not any(status >= 500 for status in live.statuses)
