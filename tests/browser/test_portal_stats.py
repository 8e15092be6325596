"""The portal's delivery-health chart with real data: an endpoint that succeeds, then fails.

Everything is real: the broker's workers deliver to a receiver on 127.0.0.1, the result
flushes write the rollups, and the page reads GET .../stats. One thing is moved by SQL: time.
In the 1-hour view a bucket is one minute of real time, so "it succeeded for a while, then
started failing" would take the test half an hour. Instead the successes are delivered first
and their attempts moved back 30 to 44 minutes, and the rollups rebuilt from the moved attempts
with the migration's own backfill function (broker_rebuild_attempt_rollups), exactly as an
upgrade builds them. Then the receiver starts failing (the known moment) and real failures are
delivered: the chart must show success bars only before that moment and failure bars only
after it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import expect

from tests.conftest import make_world, wait_until

pytestmark = pytest.mark.browser

R = "core/v1/dda/accounts/"
SUCCESS_ROUNDS = 8


async def test_the_chart_shows_when_the_endpoint_started_failing(
    make_client, open_portal, receiver, db
):
    failing = False

    async def behaviour(request: web.Request, n: int) -> web.StreamResponse:
        if failing:
            return web.Response(status=503, text="maintenance")
        return web.Response(text="ok")

    receiver.behaviour = behaviour
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url, description="Ledger hook")
    reg_id = uuid.UUID(reg["id"])

    async def delivered(n: int) -> bool:
        return bool(len(receiver.received) >= n)

    for i in range(SUCCESS_ROUNDS):  # one window per round: one event object each
        await world.emit([R + str(i)])
        await wait_until(lambda i=i: delivered(i + 1), timeout=15)

    async def recorded() -> bool:  # the last result flush committed: nothing moves after
        n = await db.fetchval(
            """SELECT count(*) FROM attempts a JOIN events e ON e.id = a.event_id
               WHERE e.registration_id = $1""",
            reg_id,
        )
        return bool(n == SUCCESS_ROUNDS)

    await wait_until(recorded, timeout=10)
    # Time travel (see the module docstring): attempt k moves back 30 + 2k minutes.
    await db.execute(
        """UPDATE attempts a SET attempted_at = a.attempted_at
               - make_interval(mins => (30 + 2 * (o.k - 1))::int)
           FROM (SELECT a2.event_id, a2.attempt_number,
                        row_number() OVER (ORDER BY a2.attempted_at DESC) AS k
                 FROM attempts a2 JOIN events e ON e.id = a2.event_id
                 WHERE e.registration_id = $1) AS o
           WHERE a.event_id = o.event_id AND a.attempt_number = o.attempt_number""",
        reg_id,
    )
    await db.execute("SELECT broker_rebuild_attempt_rollups($1)", reg_id)

    started_failing = datetime.now(UTC)
    failing = True
    for i in range(3):
        await world.emit([R + "f" + str(i)])
        await wait_until(lambda i=i: delivered(SUCCESS_ROUNDS + 1 + i), timeout=15)
    # The first failed event's retries run out and suspend the registration; the later
    # events wait in its queue.

    async def settled() -> bool:
        row = await db.fetchrow(
            """SELECT r.status, (SELECT count(*) FROM delivery_queue q
                                 WHERE q.registration_id = r.id) AS queued
               FROM registrations r WHERE r.id = $1""",
            reg_id,
        )
        return bool(row["status"] == "Suspended" and row["queued"] >= 1)

    await wait_until(settled, timeout=20)
    failures = await db.fetchval(
        """SELECT count(*) FROM attempts a JOIN events e ON e.id = a.event_id
           WHERE e.registration_id = $1 AND a.response_status = 503""",
        reg_id,
    )
    assert failures >= 3

    portal = await open_portal(client)
    page = portal.page
    await portal.open("/portal/")
    await portal.sign_in(world.partner_key)
    row = portal.registration_row(reg["id"])
    await row.locator("[data-action=stats]").click()
    await expect(page.locator("#registration-stats")).to_be_visible()
    await page.click(".period-switch [data-period='1h']")
    chart = page.locator("#stats-chart svg[data-period='1h']")
    await expect(chart).to_be_visible()
    await expect(page.locator(".period-switch [data-period='1h']")).to_have_attribute(
        "aria-pressed", "true"
    )

    async def bars(outcome: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await page.eval_on_selector_all(
            f"#stats-chart rect[data-outcome={outcome}]",
            "rs => rs.map(r => ({start: r.dataset.start, count: +r.dataset.count,"
            " height: r.getBBox().height}))",
        )
        return found

    successes, failed = await bars("success"), await bars("failure")
    assert sum(b["count"] for b in successes) == SUCCESS_ROUNDS
    assert sum(b["count"] for b in failed) == failures
    minute = started_failing.replace(second=0, microsecond=0)
    for bar in successes:
        assert datetime.fromisoformat(bar["start"]) < started_failing - timedelta(minutes=29)
    for bar in failed:
        assert datetime.fromisoformat(bar["start"]) >= minute
    assert all(b["height"] > 0 for b in successes + failed)
    # The p95 line has a point per bucket with attempts; the x-axis says when, in local time.
    assert await page.locator("#stats-chart .p95-dots circle").count() == len(
        {b["start"] for b in successes + failed}
    )
    assert await page.locator("#stats-chart .axis-time").count() == 6
    summary = page.locator("#stats-summary")
    await expect(summary).to_contain_text(f"{SUCCESS_ROUNDS} succeeded")
    await expect(summary).to_contain_text(f"{failures} failed")
    await expect(summary).to_contain_text("Suspended")
    await expect(summary).to_contain_text("pending")
    await expect(summary).to_contain_text("oldest waiting")
    await expect(page.locator(".legend")).to_contain_text("Failed")

    # The other periods draw from the same rollups.
    await page.click(".period-switch [data-period='7d']")
    await expect(page.locator("#stats-chart svg[data-period='7d']")).to_be_visible()
    await page.click(".period-switch [data-period='1h']")
    await expect(chart).to_be_visible()
    await portal.screenshot("portal-stats.png")
    portal.assert_healthy()
