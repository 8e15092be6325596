"""Isolation between registrations: endpoints that fail or hang hold a bounded share of the
delivery slots, and a circuit breaker stops hammering them, visible in the API and /metrics,
without ever changing a registration's status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from broker.domain import isolation
from tests.conftest import World, make_world, scrape_metrics, wait_until

R = "core/v1/dda/accounts/"


async def _registration(world: World, reg_id: str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/registrations/{reg_id}", headers=world.partner)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _attempts(world: World, event_id: str) -> list[dict[str, Any]]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def test_the_breaker_opens_probes_and_closes_without_touching_the_status(
    make_client, receiver, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(isolation, "BREAKER_COOLDOWN", 1.5)
    broken = {"on": True}

    async def behaviour(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500 if broken["on"] else 200)

    receiver.behaviour = behaviour
    api = await make_client(workers=True, retry_schedule=(0.05,) * 20)
    world = await make_world(api)
    reg = await world.register(receiver.url)
    fresh = await _registration(world, reg["id"])
    assert fresh["breaker"] == {"state": "closed", "openedAt": None, "nextProbeAt": None}
    await world.emit([R + "1"])

    async def opened() -> bool:
        return bool((await _registration(world, reg["id"]))["breaker"]["state"] == "open")

    await wait_until(opened)
    body = await _registration(world, reg["id"])
    assert body["status"] == "Active"  # back-pressure, not a lifecycle step
    assert body["breaker"]["openedAt"] and body["breaker"]["nextProbeAt"]
    assert body["breaker"]["nextProbeAt"] > body["breaker"]["openedAt"]
    assert len(receiver.received) == isolation.BREAKER_THRESHOLD

    async def gauge_counts_it_open() -> bool:
        # The gauge comes from the snapshot housekeeping refreshes every 0.05 s in tests.
        samples = await scrape_metrics(api)
        return samples.get('broker_delivery_breakers{state="open"}') == 1

    await wait_until(gauge_counts_it_open, timeout=1.0)
    # Open: nothing is attempted during the cool-down.
    await asyncio.sleep(1.0)
    assert len(receiver.received) == isolation.BREAKER_THRESHOLD
    # Fixed meanwhile: the half-open probe succeeds, the breaker closes, the event is delivered.
    broken["on"] = False
    event_id = receiver.received[0].json()["id"]

    async def delivered() -> bool:
        resp = await world.client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
        return bool((await resp.json())["status"] == "Success")

    await wait_until(delivered)
    body = await _registration(world, reg["id"])
    assert body["breaker"]["state"] == "closed" and body["status"] == "Active"
    assert len(await _attempts(world, event_id)) == isolation.BREAKER_THRESHOLD + 1


async def test_a_failed_half_open_probe_opens_the_breaker_again_for_longer(
    make_client, receiver, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(isolation, "BREAKER_COOLDOWN", 0.5)

    async def behaviour(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=503)

    receiver.behaviour = behaviour
    api = await make_client(workers=True, retry_schedule=(0.05,) * 20)
    world = await make_world(api)
    reg = await world.register(receiver.url)
    await world.emit([R + "1"])
    await receiver.wait_for(isolation.BREAKER_THRESHOLD + 1, timeout=10)  # the probe, failed

    async def reopened() -> bool:
        breaker = (await _registration(world, reg["id"]))["breaker"]
        return bool(breaker["state"] == "open" and len(receiver.received) > 5)

    await wait_until(reopened)
    breaker = (await _registration(world, reg["id"]))["breaker"]
    from broker.domain.ids import parse_time

    opened, probe = parse_time(breaker["openedAt"]), parse_time(breaker["nextProbeAt"])
    assert opened is not None and probe is not None
    assert (probe - opened).total_seconds() == pytest.approx(1.0, abs=0.01)  # doubled
    assert (await _registration(world, reg["id"]))["status"] == "Active"


async def test_hanging_endpoints_hold_only_the_slow_lane_and_healthy_ones_flow(
    make_client, receiver
):
    """Eight slots, so a slow lane of two. Six registrations whose endpoint hangs past the
    timeout (never delivered to, then timing out): at most two of their requests are in flight
    at any time, and the healthy registration's events keep arriving meanwhile."""
    hanging_now = {"n": 0, "peak": 0}
    timed_out: set[str] = set()
    healthy_arrivals: list[float] = []
    loop = asyncio.get_running_loop()

    async def behaviour(request: web.Request, _n: int) -> web.StreamResponse:
        if request.path.startswith("/hang/"):
            hanging_now["n"] += 1
            hanging_now["peak"] = max(hanging_now["peak"], hanging_now["n"])
            try:
                await asyncio.sleep(1.2)
            finally:
                hanging_now["n"] -= 1
                timed_out.add(request.path)
            return web.Response(text="too late")
        healthy_arrivals.append(loop.time())
        return web.Response(text="ok")

    receiver.behaviour = behaviour
    api = await make_client(
        workers=True,
        delivery_concurrency=8,
        delivery_timeout_seconds=1.0,
        retry_schedule=(0.05,) * 4,
        window_min_seconds=0.2,
        window_max_seconds=0.5,
    )
    world = await make_world(api)
    base = receiver.url.replace("/hook", "")
    healthy_world = await make_world(api, event_types=("Core.Card.Issued",))
    await healthy_world.register(f"{base}/ok")
    # Delivered to once: a proven endpoint (one never delivered to starts in the slow lane).
    await healthy_world.emit(["core/v1/cards/first"], event_name="Core.Card.Issued")
    await wait_until(lambda: _true(len(healthy_arrivals) == 1))
    await asyncio.sleep(0.3)  # its success is recorded
    del healthy_arrivals[:]
    for i in range(6):
        await world.register(f"{base}/hang/{i}")
    for i in range(3):
        await world.emit([R + str(i)])
        await asyncio.sleep(0.3)

    async def all_timed_out() -> bool:
        return len(timed_out) == 6

    await wait_until(all_timed_out, timeout=10)
    started = loop.time()
    for i in range(6):
        await healthy_world.emit([f"core/v1/cards/{i}"], event_name="Core.Card.Issued")
        await asyncio.sleep(0.3)

    async def healthy_done() -> bool:
        return len(healthy_arrivals) >= 3

    await wait_until(healthy_done, timeout=10)
    # Each healthy window (0.2-0.5 s) arrived while the hanging ones were retried.
    assert healthy_arrivals[0] - started < 1.5
    await asyncio.sleep(1.5)
    # Never delivered to, then failing: in the slow lane from their first attempt on.
    assert hanging_now["peak"] <= 2


async def _proven_behind_a_holding_receiver(
    make_client: Any, receiver: Any, registrations: int
) -> tuple[World, dict[str, Any]]:
    """A worker of four slots and ``registrations`` endpoints of one receiver that holds each
    request ``holding["hold"]`` seconds and counts them (in flight now, peak, done); each
    endpoint delivered to once already (a proven endpoint: one never delivered to is in the
    slow lane), and the counters reset."""
    holding: dict[str, Any] = {"n": 0, "peak": 0, "done": 0, "hold": 0.0}

    async def behaviour(_request: web.Request, _n: int) -> web.StreamResponse:
        holding["n"] += 1
        holding["peak"] = max(holding["peak"], holding["n"])
        try:
            await asyncio.sleep(holding["hold"])
        finally:
            holding["n"] -= 1
            holding["done"] += 1
        return web.Response(text="ok")

    receiver.behaviour = behaviour
    api = await make_client(
        workers=True, delivery_concurrency=4, window_min_seconds=0.2, window_max_seconds=0.5
    )
    world = await make_world(api)
    base = receiver.url.replace("/hook", "")
    for i in range(registrations):
        await world.register(f"{base}/ok/{i}")
    await world.emit([R + "proof"])
    await wait_until(lambda: _true(holding["done"] == registrations))
    await asyncio.sleep(0.5)  # the successes are recorded
    holding.update(peak=0, done=0)
    return world, holding


async def test_healthy_registrations_use_the_slow_lanes_share_while_it_is_idle(
    make_client, receiver
):
    """Four slots, so a slow lane of one. Four proven registrations whose endpoint answers
    slowly but well: all four requests are in flight together, the slow lane's slot lent while
    no registration needs it (it was left idle: three at a time)."""
    world, holding = await _proven_behind_a_holding_receiver(make_client, receiver, 4)
    holding["hold"] = 0.8
    await world.emit([R + "slow-but-fine"])
    await wait_until(lambda: _true(holding["done"] == 4), timeout=10)
    assert holding["peak"] == 4


async def _true(value: bool) -> bool:
    return value


async def test_a_worker_claims_a_few_attempts_ahead_and_starts_one_as_a_slot_frees(
    make_client, receiver, db
):
    """Four slots, so one attempt claimed ahead. Six proven registrations whose endpoint holds
    each request: four requests are in flight, never five, while five rows are leased; the
    fifth starts when a slot frees, and its attemptedAt is when it was sent, not when claimed."""
    world, holding = await _proven_behind_a_holding_receiver(make_client, receiver, 6)
    holding["hold"] = 1.0
    await world.emit([R + "held"])
    await wait_until(lambda: _true(holding["n"] == 4), timeout=10)
    leased = await db.fetchval("SELECT count(*) FROM delivery_queue WHERE locked_until IS NOT NULL")
    assert leased == 5
    await wait_until(lambda: _true(holding["done"] == 6), timeout=10)
    assert holding["peak"] == 4
    held_attempts = (
        "SELECT a.attempted_at FROM attempts a JOIN events e ON e.id = a.event_id"
        " WHERE e.window_id <> (SELECT window_id FROM events ORDER BY created_at LIMIT 1)"
        " ORDER BY a.attempted_at"
    )

    async def recorded() -> bool:  # a result is written after its response, in a flush
        return len(await db.fetch(held_attempts)) == 6

    await wait_until(recorded, timeout=10)
    sent = await db.fetch(held_attempts)
    assert len(sent) == 6
    # the fifth and sixth went out after a held request ended, about a second after the first
    assert (sent[4]["attempted_at"] - sent[0]["attempted_at"]).total_seconds() >= 0.8
