"""What one /metrics scrape serves, now that it renders only what may have moved
(broker/workers/gauges.py): the gauges of a new snapshot at once, the snapshot's age and the
counters at every scrape, and no ``*_created`` series."""

from __future__ import annotations

import asyncio

from tests.conftest import make_world, scrape_metrics
from tests.integration.test_metrics import ACTIVE, AGE, refresh_gauges_once


async def test_between_refreshes_the_gauges_stay_and_their_age_grows(client, db_url):
    world = await make_world(client)
    await world.register("http://127.0.0.1:9/a")
    await refresh_gauges_once(db_url)
    first = await scrape_metrics(client)
    await asyncio.sleep(0.3)
    second = await scrape_metrics(client)
    assert first[ACTIVE] == second[ACTIVE] == 1
    assert second[AGE] >= first[AGE] + 0.25
    # A new snapshot with other values is served by the next scrape.
    await world.register("http://127.0.0.1:9/b")
    await refresh_gauges_once(db_url)
    third = await scrape_metrics(client)
    assert third[ACTIVE] == 2 and third[AGE] < second[AGE]


async def test_counters_move_between_scrapes_of_an_unchanged_snapshot(client, db_url):
    world = await make_world(client)
    await refresh_gauges_once(db_url)
    before = await scrape_metrics(client)
    await world.emit(["core/v1/r/1", "core/v1/r/2"])
    after = await scrape_metrics(client)
    ingested = "broker_resource_events_ingested_total"
    assert after[ingested] - before[ingested] == 2


async def test_a_scrape_has_no_created_series(client):
    resp = await client.get("/metrics")
    text = await resp.text()
    assert "broker_delivery_attempts_total" in text
    assert "_created" not in text.replace("broker_event_objects_created_total", "")
