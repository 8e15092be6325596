"""Registration lifecycle over HTTP with real receivers and a real PostgreSQL.

Covers the contract's "Registration state machine" and the lifecycle calls of the "Partner API":
every (status, call) pair, restart (probe, drain order, resendFailed), pause, delete, test
deliveries, secret rotation and housekeeping.

On a ``Deleted`` registration the broker answers GET and a second DELETE with 404 (it is gone for
the partner, and it is no longer listed), and every other call (PATCH, restart, pause, unpause,
rotate-secret, test) with 409 naming ``currentStatus: "Deleted"``: the contract's "cannot be
updated or restarted".
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from broker.domain.ids import utcnow
from broker.store.db import create_pool
from broker.store.store import Store
from broker.workers.housekeeping import Housekeeping
from tests.conftest import (
    TEST_KEYS,
    Receiver,
    World,
    insert_event_rows,
    make_settings,
    make_world,
    stored_secrets,
    wait_until,
)

FAST = {
    "window_min_seconds": 0.2,
    "window_max_seconds": 1,
    "retry_schedule": (0.05, 0.05),
}
ATTEMPTS_TO_EXHAUST = 1 + len(FAST["retry_schedule"])  # type: ignore[arg-type]

ACTIONS = ("restart", "pause", "unpause", "delete", "patch")

# (status, action) -> (HTTP status, status afterwards). Written out from the contract, not derived
# from broker.domain.states, so the API and the table are checked against each other.
EXPECTED: dict[tuple[str, str], tuple[int, str]] = {
    ("Active", "restart"): (409, "Active"),
    ("Active", "pause"): (200, "Paused"),
    ("Active", "unpause"): (409, "Active"),
    ("Active", "delete"): (204, "Deleted"),
    ("Active", "patch"): (200, "Active"),
    ("Suspended", "restart"): (200, "Restarting"),
    ("Suspended", "pause"): (409, "Suspended"),
    ("Suspended", "unpause"): (409, "Suspended"),
    ("Suspended", "delete"): (204, "Deleted"),
    ("Suspended", "patch"): (200, "Suspended"),
    ("Restarting", "restart"): (409, "Restarting"),
    ("Restarting", "pause"): (200, "Paused"),
    ("Restarting", "unpause"): (409, "Restarting"),
    ("Restarting", "delete"): (204, "Deleted"),
    ("Restarting", "patch"): (200, "Restarting"),
    ("Paused", "restart"): (409, "Paused"),
    ("Paused", "pause"): (409, "Paused"),
    ("Paused", "unpause"): (200, "Active"),
    ("Paused", "delete"): (204, "Deleted"),
    ("Paused", "patch"): (200, "Paused"),
    ("Deleted", "restart"): (409, "Deleted"),
    ("Deleted", "pause"): (409, "Deleted"),
    ("Deleted", "unpause"): (409, "Deleted"),
    ("Deleted", "delete"): (404, "Deleted"),
    ("Deleted", "patch"): (409, "Deleted"),
}


# --------------------------------------------------------------------------- helpers


class Script:
    """Receiver behaviour chosen per request path: ``/ok``, ``/fail`` (500), ``/gone`` (410),
    ``/slow`` (answers 200 after ``slow_seconds``). ``broken`` turns every path into a 500."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.broken = False
        self.slow_seconds = 1.0
        self.slow_started = asyncio.Event()
        receiver.behaviour = self.answer

    def url(self, mode: str, tag: str = "") -> str:
        return self.receiver.url.replace("/hook", f"/{mode}/{tag or uuid.uuid4().hex[:8]}")

    async def answer(self, request: web.Request, n: int) -> web.StreamResponse:
        mode = request.path.split("/")[1]
        if self.broken or mode == "fail":
            return web.Response(status=500, text="broken")
        if mode == "gone":
            return web.Response(status=410, text="gone")
        if mode == "slow":
            self.slow_started.set()
            await asyncio.sleep(self.slow_seconds)
        return web.Response(text="ok")

    def ids_for(self, reg_id: str) -> list[str]:
        """Event ids delivered for one registration, in arrival order."""
        return [
            r.json()["id"] for r in self.receiver.received if r.json()["registrationId"] == reg_id
        ]


async def setup(make_client: Any, receiver: Receiver, **overrides: Any) -> tuple[World, Script]:
    client = await make_client(workers=True, **{**FAST, **overrides})
    return await make_world(client), Script(receiver)


async def get_reg(world: World, reg_id: str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/registrations/{reg_id}", headers=world.partner)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def wait_status(world: World, reg_id: str, status: str, timeout: float = 10.0) -> None:
    async def reached() -> bool:
        return (await get_reg(world, reg_id))["status"] == status

    await wait_until(reached, timeout=timeout)


async def events_of(world: World, reg_id: str, **query: str) -> list[dict[str, Any]]:
    resp = await world.client.get(
        "/webhooks/v1/events", params={"registrationId": reg_id, **query}, headers=world.partner
    )
    assert resp.status == 200, await resp.text()
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return sorted(data, key=lambda e: (e["createdAt"], e["id"]))  # oldest first


async def get_event(world: World, event_id: str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def attempts_of(world: World, event_id: str) -> list[dict[str, Any]]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
    assert resp.status == 200, await resp.text()
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def emit_one(
    world: World, reg_ids: list[str], event_name: str | None = None
) -> list[dict[str, Any]]:
    """Emit one resource event and wait until its window closed into one event per registration;
    returns those new events. Waiting keeps successive calls in distinct windows, so they create
    event objects in a known order."""
    before = {rid: {e["id"] for e in await events_of(world, rid)} for rid in reg_ids}
    await world.emit([f"core/v1/dda/accounts/{uuid.uuid4().hex[:10]}"], event_name=event_name)
    new: dict[str, dict[str, Any]] = {}

    async def created() -> bool:
        for rid in reg_ids:
            fresh = [e for e in await events_of(world, rid) if e["id"] not in before[rid]]
            if fresh:
                new[rid] = fresh[0]
        return len(new) == len(reg_ids)

    await wait_until(created)
    return [new[rid] for rid in reg_ids]


async def call(world: World, reg_id: str, action: str, body: Any = None) -> Any:
    path = f"/webhooks/v1/registrations/{reg_id}"
    if action == "delete":
        return await world.client.delete(path, headers=world.partner)
    if action == "patch":
        return await world.client.patch(
            path, json=body or {"description": "changed"}, headers=world.partner
        )
    return await world.client.post(f"{path}/{action}", json=body, headers=world.partner)


async def assert_conflict(resp: Any, current: str) -> None:
    assert resp.status == 409, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == 409
    assert problem["currentStatus"] == current
    assert current in problem["detail"]
    assert problem["title"]


async def suspend_by_exhaustion(
    world: World, script: Script, reg_ids: list[str]
) -> list[dict[str, Any]]:
    """The registrations' URLs must fail; one event each exhausts its retries -> Suspended."""
    events = await emit_one(world, reg_ids)
    for rid in reg_ids:
        await wait_status(world, rid, "Suspended")
    return events


async def stays(predicate: Any, seconds: float = 0.6) -> bool:
    """True when ``predicate`` holds throughout ``seconds`` (several poll intervals)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if not await predicate():
            return False
        await asyncio.sleep(0.1)
    return True


# --------------------------------------------------------------------------- every (status, call)


@pytest.mark.parametrize("status", ["Active", "Suspended", "Restarting", "Paused", "Deleted"])
async def test_every_status_and_partner_call(make_client, receiver, db, status):
    world, script = await setup(make_client, receiver)
    mode = "fail" if status in ("Suspended", "Restarting") else "ok"
    regs = {a: await world.register(script.url(mode, a)) for a in ACTIONS}
    ids = [r["id"] for r in regs.values()]
    if status in ("Suspended", "Restarting"):
        await suspend_by_exhaustion(world, script, ids)
    if status == "Restarting":
        for rid in ids:
            resp = await call(world, rid, "restart")
            assert resp.status == 200
            assert (await resp.json())["status"] == "Restarting"
    if status == "Paused":
        for rid in ids:
            assert (await call(world, rid, "pause")).status == 200
    if status == "Deleted":
        for rid in ids:
            assert (await call(world, rid, "delete")).status == 204

    for action, reg in regs.items():
        code, after = EXPECTED[(status, action)]
        resp = await call(world, reg["id"], action)
        if code == 409:
            await assert_conflict(resp, status)
        else:
            assert resp.status == code, (action, await resp.text())
        if code == 200:
            body = await resp.json()
            assert body["status"] == after, action
            assert body["id"] == reg["id"]
            assert "secret" not in body
        if action == "patch" and code == 200:
            assert body["description"] == "changed"
        row = await db.fetchrow(
            "SELECT status, description FROM registrations WHERE id = $1", uuid.UUID(reg["id"])
        )
        assert row["status"] == after, action
        if code == 409:
            assert row["description"] == "", "a refused call must change nothing"
        get = await world.client.get(
            f"/webhooks/v1/registrations/{reg['id']}", headers=world.partner
        )
        if after == "Deleted":
            assert get.status == 404
            assert get.content_type == "application/problem+json"
        else:
            assert get.status == 200
            assert (await get.json())["status"] == after

    if status == "Deleted":
        for reg in regs.values():
            for extra, body in (("rotate-secret", {"graceSeconds": 0}), ("test", None)):
                resp = await world.client.post(
                    f"/webhooks/v1/registrations/{reg['id']}/{extra}",
                    json=body,
                    headers=world.partner,
                )
                await assert_conflict(resp, "Deleted")
    # Another partner sees none of them, whatever their status.
    other = await make_world(world.client)
    for reg in regs.values():
        for action in ACTIONS:
            resp = await call(other, reg["id"], action)
            assert resp.status == 404, (action, await resp.text())


async def test_unknown_and_malformed_ids_are_404(make_client, receiver):
    world, _ = await setup(make_client, receiver)
    for rid in (str(uuid.uuid4()), "not-a-uuid"):
        for action in ACTIONS:
            assert (await call(world, rid, action)).status == 404, action
        for extra in ("rotate-secret", "test"):
            resp = await world.client.post(
                f"/webhooks/v1/registrations/{rid}/{extra}", headers=world.partner
            )
            assert resp.status == 404


async def test_gone_suspends_at_once_and_keeps_the_event_queued(make_client, receiver):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("gone"))
    [event] = await emit_one(world, [reg["id"]])
    await wait_status(world, reg["id"], "Suspended")
    assert len(receiver.received) == 1  # no retries after a 410
    assert (await get_event(world, event["id"]))["status"] == "Pending"
    assert len(await attempts_of(world, event["id"])) == 1
    assert (await get_reg(world, reg["id"]))["failureCount"] == 1


# --------------------------------------------------------------------------- restart


async def test_restart_probes_the_oldest_event_then_drains_in_creation_order(make_client, receiver):
    world, script = await setup(make_client, receiver, delivery_per_registration=1)
    reg = await world.register(script.url("ok"))
    rid = reg["id"]
    script.broken = True
    [first] = await suspend_by_exhaustion(world, script, [rid])
    assert len(receiver.received) == ATTEMPTS_TO_EXHAUST
    assert (await get_event(world, first["id"]))["status"] == "Failed"
    assert (await get_reg(world, rid))["failureCount"] == ATTEMPTS_TO_EXHAUST

    # While Suspended, new event objects queue as Pending and are not attempted.
    queued = [(await emit_one(world, [rid]))[0] for _ in range(3)]
    assert [e["status"] for e in queued] == ["Pending"] * 3
    seen = len(receiver.received)

    async def untouched() -> bool:
        return (
            len(receiver.received) == seen and (await get_reg(world, rid))["status"] == "Suspended"
        )

    assert await stays(untouched)
    for e in queued:
        assert await attempts_of(world, e["id"]) == []

    # Restart with the receiver still broken: one attempt, on the oldest queued event.
    resp = await call(world, rid, "restart")
    assert resp.status == 200
    assert (await resp.json())["status"] == "Restarting"
    await receiver.wait_for(seen + 1)
    await wait_status(world, rid, "Suspended")
    assert await stays(lambda: _count_is(receiver, seen + 1))
    assert receiver.received[seen].headers["webhook-id"] == queued[0]["id"]
    assert (await get_event(world, queued[0]["id"]))["status"] == "Pending"
    assert len(await attempts_of(world, queued[0]["id"])) == 1
    for e in queued[1:]:
        assert await attempts_of(world, e["id"]) == []
    assert (await get_reg(world, rid))["failureCount"] == ATTEMPTS_TO_EXHAUST + 1

    # Fixed; restart with resendFailed: the Failed event is queued again, and everything drains
    # in creation order (the re-queued one is the oldest, so it is the probe).
    script.broken = False
    seen = len(receiver.received)
    resp = await call(world, rid, "restart", {"resendFailed": True})
    assert resp.status == 200
    assert (await resp.json())["status"] == "Restarting"
    await receiver.wait_for(seen + 4)
    await wait_status(world, rid, "Active")
    delivered = [r.headers["webhook-id"] for r in receiver.received[seen:]]
    assert delivered == [first["id"]] + [e["id"] for e in queued]

    async def all_delivered() -> bool:
        return all(e["status"] == "Success" for e in await events_of(world, rid))

    await wait_until(all_delivered)
    after = await get_reg(world, rid)
    assert after["failureCount"] == 0
    assert after["lastSuccessAt"] is not None
    assert await stays(lambda: _count_is(receiver, seen + 4))  # nothing delivered twice


async def _count_is(receiver: Receiver, n: int) -> bool:
    return len(receiver.received) == n


async def test_restart_without_resend_leaves_failed_events_alone(make_client, receiver):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    script.broken = True
    [failed] = await suspend_by_exhaustion(world, script, [reg["id"]])
    script.broken = False
    [queued] = await emit_one(world, [reg["id"]])
    resp = await call(world, reg["id"], "restart", {"resendFailed": False})
    assert resp.status == 200
    await wait_status(world, reg["id"], "Active")

    async def delivered() -> bool:
        return (await get_event(world, queued["id"]))["status"] == "Success"

    await wait_until(delivered)
    assert await stays(lambda: _count_is(receiver, ATTEMPTS_TO_EXHAUST + 1))
    assert (await get_event(world, failed["id"]))["status"] == "Failed"


async def test_restarting_waits_for_the_next_event_which_makes_it_active(make_client, receiver):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    rid = reg["id"]
    script.broken = True
    await suspend_by_exhaustion(world, script, [rid])
    script.broken = False
    resp = await call(world, rid, "restart")
    assert (await resp.json())["status"] == "Restarting"
    seen = len(receiver.received)

    async def waiting() -> bool:
        return (await get_reg(world, rid))["status"] == "Restarting" and len(
            receiver.received
        ) == seen

    assert await stays(waiting)
    [event] = await emit_one(world, [rid])
    await wait_status(world, rid, "Active")
    assert receiver.received[seen].headers["webhook-id"] == event["id"]
    assert (await get_reg(world, rid))["failureCount"] == 0


async def test_waiting_restarting_registrations_do_not_starve_a_probe(make_client, receiver):
    """More registrations wait in Restarting with nothing queued than one claim takes: the one
    with a queued event still gets its probe."""
    client = await make_client(workers=True, delivery_batch_size=2, **FAST)
    world = await make_world(client, event_types=("Core.Account.Opened", "Core.Card.Issued"))
    script = Script(receiver)
    script.broken = True
    waiting = [await world.register(script.url("ok")) for _ in range(3)]
    card = await world.register(script.url("ok"), ["Core.Card.Issued"])
    await suspend_by_exhaustion(world, script, [r["id"] for r in waiting])
    for reg in waiting:
        assert (await (await call(world, reg["id"], "restart")).json())["status"] == "Restarting"
    [failed] = await emit_one(world, [card["id"]], "Core.Card.Issued")
    await wait_status(world, card["id"], "Suspended")
    [queued] = await emit_one(world, [card["id"]], "Core.Card.Issued")
    script.broken = False
    assert (await call(world, card["id"], "restart")).status == 200
    await wait_status(world, card["id"], "Active")
    assert receiver.received[-1].headers["webhook-id"] == queued["id"]
    assert (await get_event(world, failed["id"]))["status"] == "Failed"
    for reg in waiting:
        assert (await get_reg(world, reg["id"]))["status"] == "Restarting"


async def test_restart_body_is_validated(make_client, receiver):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("fail"))
    await suspend_by_exhaustion(world, script, [reg["id"]])
    for body in ({"resendFailed": "yes"}, {"unknown": 1}, [1]):
        resp = await call(world, reg["id"], "restart", body)
        assert resp.status == 400, body
        assert resp.content_type == "application/problem+json"
    assert (await get_reg(world, reg["id"]))["status"] == "Suspended"
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{reg['id']}/restart", data=b"{not json", headers=world.partner
    )
    assert resp.status == 400
    assert (await get_reg(world, reg["id"]))["status"] == "Suspended"


async def test_concurrent_restarts_and_pauses_have_exactly_one_winner(make_client, receiver):
    world, script = await setup(make_client, receiver)
    suspended = await world.register(script.url("fail"))
    active = await world.register(script.url("ok"))
    await suspend_by_exhaustion(world, script, [suspended["id"]])
    for rid, action, winner in (
        (suspended["id"], "restart", "Restarting"),
        (active["id"], "pause", "Paused"),
    ):
        first, second = await asyncio.gather(call(world, rid, action), call(world, rid, action))
        codes = sorted([first.status, second.status])
        assert codes == [200, 409], (action, codes)
        for resp in (first, second):
            if resp.status == 200:
                assert (await resp.json())["status"] == winner
            else:
                await assert_conflict(resp, winner)
        assert (await get_reg(world, rid))["status"] == winner


# --------------------------------------------------------------------------- pause


async def test_pause_queues_and_unpause_delivers(make_client, receiver):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    rid = reg["id"]
    resp = await call(world, rid, "pause", {"reason": "maintenance"})
    assert resp.status == 200
    assert (await resp.json())["status"] == "Paused"
    queued = [(await emit_one(world, [rid]))[0] for _ in range(2)]

    async def nothing_sent() -> bool:
        return receiver.received == [] and (await get_reg(world, rid))["status"] == "Paused"

    assert await stays(nothing_sent)
    for e in queued:
        assert (await get_event(world, e["id"]))["status"] == "Pending"
        assert await attempts_of(world, e["id"]) == []
    resp = await call(world, rid, "unpause")
    assert resp.status == 200
    assert (await resp.json())["status"] == "Active"
    await receiver.wait_for(2)
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(
        e["id"] for e in queued
    )

    async def delivered() -> bool:
        return [(await get_event(world, e["id"]))["status"] for e in queued] == ["Success"] * 2

    await wait_until(delivered)


# --------------------------------------------------------------------------- delete


async def test_delete_discards_the_queue_and_keeps_history(make_client, receiver, db):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    rid = reg["id"]
    [ok] = await emit_one(world, [rid])

    async def delivered() -> bool:
        return (await get_event(world, ok["id"]))["status"] == "Success"

    await wait_until(delivered)
    script.broken = True
    [failed] = await suspend_by_exhaustion(world, script, [rid])
    queued = [(await emit_one(world, [rid]))[0] for _ in range(2)]
    script.broken = False
    keep = await world.register(script.url("ok"))

    resp = await call(world, rid, "delete")
    assert resp.status == 204
    assert await resp.read() == b""
    # Soft delete: the row stays, marked Deleted.
    row = await db.fetchrow(
        "SELECT status, deleted_at FROM registrations WHERE id = $1", uuid.UUID(rid)
    )
    assert row["status"] == "Deleted"
    assert row["deleted_at"] is not None
    # Queued events are discarded, delivered and failed ones stay with their attempts.
    for e in queued:
        resp = await world.client.get(f"/webhooks/v1/events/{e['id']}", headers=world.partner)
        assert resp.status == 404
        assert (
            await db.fetchval("SELECT count(*) FROM events WHERE id = $1", uuid.UUID(e["id"])) == 0
        )
    assert (await get_event(world, ok["id"]))["status"] == "Success"
    assert (await get_event(world, failed["id"]))["status"] == "Failed"
    assert len(await attempts_of(world, failed["id"])) == ATTEMPTS_TO_EXHAUST
    assert {e["id"] for e in await events_of(world, rid)} == {ok["id"], failed["id"]}
    # Gone for the partner: not listed, not readable, not changeable; others unaffected.
    listed = (
        await (await world.client.get("/webhooks/v1/registrations", headers=world.partner)).json()
    )["data"]
    assert [r["id"] for r in listed] == [keep["id"]]
    assert (
        await world.client.get(f"/webhooks/v1/registrations/{rid}", headers=world.partner)
    ).status == 404
    for action in ("patch", "restart", "pause", "unpause"):
        await assert_conflict(await call(world, rid, action), "Deleted")
    assert (await call(world, rid, "delete")).status == 404
    # New resource events create nothing for it.
    seen = len(receiver.received)
    [fresh] = await emit_one(world, [keep["id"]])
    await receiver.wait_for(seen + 1)
    assert receiver.received[-1].headers["webhook-id"] == fresh["id"]
    assert {e["id"] for e in await events_of(world, rid)} == {ok["id"], failed["id"]}


async def test_delete_during_an_attempt_does_not_jam_delivery(make_client, receiver, db):
    """An event whose registration is deleted while its attempt is in flight: recording that
    attempt must not fail and block the recording of every later result."""
    world, script = await setup(make_client, receiver, delivery_timeout_seconds=5)
    script.slow_seconds = 2.0
    reg = await world.register(script.url("slow"))
    [in_flight] = await emit_one(world, [reg["id"]])
    await asyncio.wait_for(script.slow_started.wait(), timeout=10)
    assert (await call(world, reg["id"], "delete")).status == 204
    assert len(receiver.received) == 1  # still being answered (2 s): the delete raced the attempt
    other = await world.register(script.url("ok"))
    [event] = await emit_one(world, [other["id"]])

    async def recorded() -> bool:
        return (await get_event(world, event["id"]))["status"] == "Success"

    await wait_until(recorded)

    async def settled() -> bool:
        row = await db.fetchrow(
            "SELECT status FROM events WHERE id = $1", uuid.UUID(in_flight["id"])
        )
        queued = await db.fetchval(
            "SELECT count(*) FROM delivery_queue WHERE event_id = $1", uuid.UUID(in_flight["id"])
        )
        return row is None or (row["status"] == "Success" and queued == 0)

    await wait_until(settled)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM attempts WHERE event_id = $1", uuid.UUID(event["id"])
        )
        == 1
    )


# --------------------------------------------------------------------------- test delivery


async def test_test_delivery_is_signed_recorded_and_changes_no_status(make_client, receiver, db):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    rid = reg["id"]
    resp = await world.client.post(f"/webhooks/v1/registrations/{rid}/test", headers=world.partner)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["success"] is True
    assert answer["attempt"]["attemptNumber"] == 1
    assert answer["attempt"]["responseStatus"] == 200
    assert answer["attempt"]["error"] is None
    [delivery] = receiver.received
    payload = Webhook(reg["secret"]).verify(delivery.body, delivery.headers)
    assert payload["eventName"] == "test.event"
    assert payload["resources"] == []
    assert payload["registrationId"] == rid
    assert payload["partnerId"] == world.partner_id
    listed = await events_of(world, rid, eventName="test.event")
    assert [e["id"] for e in listed] == [payload["id"]] == [delivery.headers["webhook-id"]]
    assert listed[0]["status"] == "Success"
    attempts = await attempts_of(world, payload["id"])
    assert len(attempts) == 1
    assert attempts[0]["responseStatus"] == 200
    assert (await get_reg(world, rid))["status"] == "Active"
    # The recorded test event is finished: the workers never deliver it again.
    assert await stays(lambda: _count_is(receiver, 1))

    # On a Suspended registration, with a receiver that answers: success, still Suspended.
    script.broken = True
    await suspend_by_exhaustion(world, script, [rid])
    before = await get_reg(world, rid)
    script.broken = False
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{rid}/test", json={}, headers=world.partner
    )
    assert resp.status == 200
    assert (await resp.json())["success"] is True
    after = await get_reg(world, rid)
    assert after["status"] == "Suspended"
    assert after["failureCount"] == before["failureCount"]

    # A failing receiver: success false, status and failureCount unchanged, attempt recorded.
    script.broken = True
    resp = await world.client.post(f"/webhooks/v1/registrations/{rid}/test", headers=world.partner)
    assert resp.status == 200
    answer = await resp.json()
    assert answer["success"] is False
    assert answer["attempt"]["responseStatus"] == 500
    after = await get_reg(world, rid)
    assert after["status"] == "Suspended"
    assert after["failureCount"] == before["failureCount"]
    failed = [
        e for e in await events_of(world, rid, eventName="test.event") if e["status"] == "Failed"
    ]
    assert len(failed) == 1
    assert (await attempts_of(world, failed[0]["id"]))[0]["responseStatus"] == 500
    # A failed test is never retried either.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events WHERE event_name = 'test.event' AND status = 'Pending'"
        )
        == 0
    )


async def test_test_delivery_on_paused_and_active_failing_changes_nothing(make_client, receiver):
    world, script = await setup(make_client, receiver)
    active = await world.register(script.url("fail"))
    paused = await world.register(script.url("ok"))
    assert (await call(world, paused["id"], "pause")).status == 200
    for reg, success, status in ((active, False, "Active"), (paused, True, "Paused")):
        resp = await world.client.post(
            f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner
        )
        assert resp.status == 200
        assert (await resp.json())["success"] is success
        after = await get_reg(world, reg["id"])
        assert after["status"] == status
        assert after["failureCount"] == 0


# --------------------------------------------------------------------------- secret rotation


def _verifies(secret: str, delivery: Any) -> bool:
    try:
        Webhook(secret).verify(delivery.body, delivery.headers)
    except WebhookVerificationError:
        return False
    return True


async def test_rotation_with_grace_signs_with_both_secrets(make_client, receiver):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    old = reg["secret"]
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{reg['id']}/rotate-secret",
        json={"graceSeconds": 60},
        headers=world.partner,
    )
    assert resp.status == 200, await resp.text()
    new = (await resp.json())["secret"]
    assert new.startswith("whsec_") and new != old
    assert "secret" not in await get_reg(world, reg["id"])
    await emit_one(world, [reg["id"]])
    [delivery] = await receiver.wait_for(1)
    signatures = delivery.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert _verifies(new, delivery)
    assert _verifies(old, delivery)
    # The test delivery signs with every live secret too.
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner
    )
    assert (await resp.json())["success"] is True
    test_delivery = receiver.received[-1]
    assert len(test_delivery.headers["webhook-signature"].split(" ")) == 2
    assert _verifies(new, test_delivery) and _verifies(old, test_delivery)


async def test_rotation_without_grace_signs_with_the_new_secret_only(make_client, receiver):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    old = reg["secret"]
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{reg['id']}/rotate-secret",
        json={"graceSeconds": 0},
        headers=world.partner,
    )
    assert resp.status == 200
    new = (await resp.json())["secret"]
    await emit_one(world, [reg["id"]])
    [delivery] = await receiver.wait_for(1)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 1
    assert _verifies(new, delivery)
    assert not _verifies(old, delivery)


async def test_rotation_grace_ends(make_client, receiver, db, db_url):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    old = reg["secret"]
    given = (
        "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    )  # 33 bytes, given by the partner
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{reg['id']}/rotate-secret",
        json={"graceSeconds": 1, "secret": given},
        headers=world.partner,
    )
    assert resp.status == 200
    assert (await resp.json())["secret"] == given
    await asyncio.sleep(1.2)
    # The delivery query ignores the expired previous secret even before housekeeping runs.
    await emit_one(world, [reg["id"]])
    [delivery] = await receiver.wait_for(1)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 1
    assert _verifies(given, delivery)
    assert not _verifies(old, delivery)
    pool = await create_pool(db_url, size=2)
    try:
        assert (
            await Housekeeping(Store(pool, keys=TEST_KEYS), make_settings()).drop_expired_secrets()
            == 1
        )
    finally:
        await pool.close()
    row = await db.fetchrow(
        "SELECT previous_secret_sealed, previous_secret_expires_at FROM registrations"
        " WHERE id = $1",
        uuid.UUID(reg["id"]),
    )
    assert row["previous_secret_sealed"] is None and row["previous_secret_expires_at"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"graceSeconds": -1},
        {"graceSeconds": 1.5},
        {"graceSeconds": "60"},
        {"graceSeconds": True},
        {"graceSeconds": None},
        {"graceSeconds": 10**9},
        {"graceSeconds": 60, "secret": "not-a-secret"},
        {"graceSeconds": 60, "other": 1},
        ["graceSeconds"],
    ],
)
async def test_rotation_rejects_bad_input_and_changes_nothing(make_client, receiver, db, body):
    world, script = await setup(make_client, receiver)
    reg = await world.register(script.url("ok"))
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{reg['id']}/rotate-secret", json=body, headers=world.partner
    )
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"
    row = await stored_secrets(db, reg["id"])
    assert row["secret"] == reg["secret"]
    assert row["previous_secret"] is None


# --------------------------------------------------------------------------- housekeeping


async def _insert_event(
    db: Any, world: World, reg_id: str, status: str, age_days: int = 0
) -> uuid.UUID:
    [event_id] = await insert_event_rows(
        db,
        [
            {
                "partner_id": world.partner_id,
                "registration_id": reg_id,
                "event_name": world.event_name,
                "resources": ["r"],
                "status": status,
                "created_at": utcnow() - timedelta(days=age_days),
            }
        ],
    )
    await db.execute(
        """INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms)
           VALUES ($1, 1, now(), 5)""",
        event_id,
    )
    if status == "Pending":  # queued: its delivery state lives in delivery_queue
        await db.execute(
            """INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at,
                                           attempt_count)
               SELECT id, registration_id, created_at, created_at, 1 FROM events WHERE id = $1""",
            event_id,
        )
    return event_id


async def test_housekeeping_jobs(make_client, receiver, db, db_url):
    client = await make_client()  # no workers: housekeeping is driven by hand here
    world = await make_world(client)
    script = Script(receiver)
    reg = await world.register(script.url("ok"))
    assert (await call(world, reg["id"], "pause")).status == 200  # nothing is delivered meanwhile
    rid = reg["id"]
    old_success = await _insert_event(db, world, rid, "Success", 40)
    old_failed = await _insert_event(db, world, rid, "Failed", 31)
    # Retention drops whole days: a day holding a queued event stays until it holds none.
    old_pending = await _insert_event(db, world, rid, "Pending", 41)
    recent = await _insert_event(db, world, rid, "Success", 29)
    stale = await _insert_event(db, world, rid, "Pending")
    live = await _insert_event(db, world, rid, "Pending")
    await db.execute(
        "UPDATE delivery_queue SET locked_until = now() - interval '2 minutes', locked_by = 'dead'"
        " WHERE event_id = $1",
        stale,
    )
    await db.execute(
        "UPDATE delivery_queue SET locked_until = now() + interval '2 minutes', locked_by = 'alive'"
        " WHERE event_id = $1",
        live,
    )
    expiring = await world.register(script.url("ok"))
    graced = await world.register(script.url("ok"))
    for r, grace in ((expiring, 60), (graced, 3600)):
        resp = await client.post(
            f"/webhooks/v1/registrations/{r['id']}/rotate-secret",
            json={"graceSeconds": grace},
            headers=world.partner,
        )
        assert resp.status == 200
    await db.execute(
        "UPDATE registrations SET previous_secret_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(expiring["id"]),
    )

    pool = await create_pool(db_url, size=2)
    try:
        housekeeping = Housekeeping(Store(pool, keys=TEST_KEYS), make_settings(retention_days=30))
        assert await housekeeping.purge_retention() == 2  # days dropped
        left = {r["id"] for r in await db.fetch("SELECT id FROM events")}
        assert left == {old_pending, recent, stale, live}
        assert (
            await db.fetchval(
                "SELECT count(*) FROM attempts WHERE event_id = ANY($1::uuid[])",
                [old_success, old_failed],
            )
            == 0
        )
        resp = await client.get(f"/webhooks/v1/events/{old_success}", headers=world.partner)
        assert resp.status == 404
        assert await housekeeping.purge_retention() == 0

        assert await housekeeping.drop_expired_secrets() == 1
        secrets = {
            str(r["id"]): r["previous_secret_sealed"]
            for r in await db.fetch("SELECT id, previous_secret_sealed FROM registrations")
        }
        assert secrets[expiring["id"]] is None
        assert secrets[graced["id"]] is not None

        # A Deleted registration's queued events whose attempt was in flight at delete time
        # are discarded once their lease is over.
        assert (await call(world, rid, "delete")).status == 204
        assert {r["id"] for r in await db.fetch("SELECT id FROM events")} == {recent, live}
        assert await housekeeping.discard_orphaned_events() == 0  # its attempt may be in flight
        await db.execute(
            "UPDATE delivery_queue SET locked_until = now() - interval '2 minutes'"
            " WHERE event_id = $1",
            live,
        )
        assert await housekeeping.discard_orphaned_events() == 1
        assert {r["id"] for r in await db.fetch("SELECT id FROM events")} == {recent}
    finally:
        await pool.close()


async def test_housekeeping_scheduler_starts_runs_and_stops_cleanly(
    make_client, receiver, db, db_url
):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(Script(receiver).url("ok"))
    resp = await client.post(
        f"/webhooks/v1/registrations/{reg['id']}/rotate-secret",
        json={"graceSeconds": 60},
        headers=world.partner,
    )
    assert resp.status == 200
    await db.execute(
        "UPDATE registrations SET previous_secret_expires_at = now() - interval '1 second'"
    )
    pool = await create_pool(db_url, size=2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            housekeeping = Housekeeping(
                Store(pool, keys=TEST_KEYS), make_settings(), first_run_after=0.1
            )
            housekeeping.start()
            assert housekeeping.running
            assert set(housekeeping.job_names) == {
                "ensure_history_partitions",
                "purge_retention",
                "drop_expired_secrets",
                "discard_orphaned_events",
                "purge_idempotency_keys",
                "purge_expired_portal_links",
                "prune_attempt_rollups",
                "prune_heartbeats",
                "refresh_gauges",
                "expire_pending_events",
                "vacuum_queue_tables",
            }

            # The first runs come soon after start, not a full interval later.
            async def dropped() -> bool:
                return (
                    await db.fetchval(
                        "SELECT count(*) FROM registrations"
                        " WHERE previous_secret_sealed IS NOT NULL"
                    )
                    == 0
                )

            await wait_until(dropped, timeout=10)
            housekeeping.stop()
            assert not housekeeping.running
            housekeeping.stop()  # idempotent
            await asyncio.sleep(0.05)
            # AsyncIOScheduler.shutdown takes effect on the next loop turn.
            assert not housekeeping._scheduler.running
        assert [str(w.message) for w in caught] == []
    finally:
        await pool.close()
