"""Gauges read from the database when /metrics is scraped (queue depth, registrations)."""

from __future__ import annotations

from broker import metrics
from broker.store.store import Store


async def refresh_gauges(store: Store) -> None:
    snapshot = await store.gauge_snapshot()
    metrics.QUEUE_DEPTH.set(snapshot.queue_depth)
    metrics.QUEUE_OLDEST_AGE.set(snapshot.oldest_pending_age_seconds)
    for status, count in snapshot.registrations_by_status.items():
        metrics.REGISTRATIONS_BY_STATUS.labels(status=status).set(count)
