"""The database-wide /metrics gauges: computed in the background, served from a snapshot.

``refresh_gauges`` is a housekeeping job (one process per cluster runs it every
``BROKER_GAUGE_REFRESH_SECONDS``): it runs the gauge queries and stores the result. A scrape
only calls ``load_gauges``, which reads that one row, so scraping costs the same with a million
Pending event objects as with none, and an unauthenticated endpoint cannot make the database
scan the queue.
"""

from __future__ import annotations

from broker import metrics
from broker.store.records import GaugeSnapshot
from broker.store.store import Store


async def refresh_gauges(store: Store) -> GaugeSnapshot:
    snapshot = await store.refresh_gauge_snapshot()
    publish(snapshot)
    return snapshot


async def load_gauges(store: Store) -> GaugeSnapshot | None:
    snapshot = await store.read_gauge_snapshot()
    # Before the first refresh: zeros and age -1, not values this process held from before.
    publish(snapshot if snapshot is not None else GaugeSnapshot.zero(age_seconds=-1))
    await load_heartbeats(store)
    return snapshot


async def load_heartbeats(store: Store) -> None:
    """The workers' heartbeats, read at every scrape (one row per worker process and role):
    they must not depend on housekeeping, which runs in the workers they watch."""
    beats = await store.read_heartbeats()
    metrics.WORKER_LAST_CLAIM.clear()  # a pruned process's series ends
    for beat in beats:
        metrics.WORKER_LAST_CLAIM.labels(process=beat.process, role=beat.role).set(beat.last_claim)


def publish(snapshot: GaugeSnapshot) -> None:
    for status, depth in snapshot.queue_depth.items():
        metrics.QUEUE_DEPTH.labels(registration_status=status).set(depth)
    for status, age in snapshot.oldest_pending_age_seconds.items():
        metrics.QUEUE_OLDEST_AGE.labels(registration_status=status).set(age)
    metrics.DELIVERY_LAG.set(snapshot.delivery_lag_seconds)
    for status, count in snapshot.registrations_by_status.items():
        metrics.REGISTRATIONS_BY_STATUS.labels(status=status).set(count)
    for state, count in snapshot.breakers.items():
        metrics.BREAKERS.labels(state=state).set(count)
    for role, age in snapshot.oldest_due_age_seconds.items():
        metrics.OLDEST_DUE_AGE.labels(role=role).set(age)
    metrics.GAUGES_AGE.set(snapshot.age_seconds)
