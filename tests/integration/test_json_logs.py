"""BROKER_LOG_FORMAT=json: one JSON object per line, carrying event and registration ids."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from broker.config import Settings
from broker.logs import configure_logging
from tests.conftest import make_world, wait_until


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was: ``configure_logging`` replaces its handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_delivery_and_transition_logs_are_json_with_ids(
    restore_logging, capsys, make_client, receiver
):
    # Configured here, not in a fixture: capsys captures each test phase on a fresh stream.
    configure_logging(Settings.from_env({"BROKER_LOG_FORMAT": "json"}))
    client = await make_client(workers=True, retry_schedule=(0.05,))
    world = await make_world(client)

    async def failing(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500, text="down")

    receiver.behaviour = failing
    reg = await world.register(receiver.url)
    await world.emit(["core/v1/dda/accounts/1"])
    seen: list[dict[str, Any]] = []

    async def suspended_logged() -> bool:
        # Every line on stderr must parse: a stray text line would fail json.loads here.
        seen.extend(json_lines(capsys.readouterr().err))
        return any(e.get("to_status") == "Suspended" for e in seen)

    await wait_until(suspended_logged)
    resp = await client.post(
        f"/webhooks/v1/registrations/{reg['id']}/restart", headers=world.partner
    )
    assert resp.status == 200
    seen.extend(json_lines(capsys.readouterr().err))

    attempt = next(e for e in seen if e.get("attempt") == 1 and "event_id" in e)
    assert attempt["registration_id"] == reg["id"]
    assert attempt["partner_id"] == world.partner_id
    assert attempt["response_status"] == 500
    assert isinstance(attempt["duration_ms"], int)
    assert attempt["level"] == "info"
    assert attempt["ts"].endswith("Z")

    exhausted = next(e for e in seen if e.get("attempt") == 2)
    assert exhausted["level"] == "warning"
    assert exhausted["event_id"] == attempt["event_id"]

    suspension = next(e for e in seen if e.get("to_status") == "Suspended")
    assert suspension["registration_id"] == reg["id"]
    assert suspension["event_id"] == attempt["event_id"]
    assert suspension["logger"] == "broker.workers.delivery"

    restarted = next(e for e in seen if e.get("to_status") == "Restarting")
    assert restarted["registration_id"] == reg["id"]
    assert restarted["partner_id"] == world.partner_id
    assert restarted["logger"] == "broker.api.routes_registrations"
