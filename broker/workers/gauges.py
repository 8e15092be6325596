"""The database-wide /metrics gauges: computed in the background, served from a snapshot.

``refresh_gauges`` is a housekeeping job (one process per cluster runs it every
``BROKER_GAUGE_REFRESH_SECONDS``): it runs the gauge queries and stores the result. A scrape
only calls ``scrape``, which reads that one row and the workers' heartbeats in one round trip,
so scraping costs the same with a million Pending event objects as with none, and an
unauthenticated endpoint cannot make the database scan the queue.

What a scrape renders is cached by how often it changes (broker/metrics.py): the snapshot's
gauges are published and rendered once per stored snapshot, not at every scrape, which leaves
per scrape this process's counters, the snapshot's age and the heartbeats.
"""

from __future__ import annotations

import logging

import orjson

from broker import metrics
from broker.store.heartbeats import WorkerHeartbeat
from broker.store.records import GaugeSnapshot
from broker.store.store import Store

log = logging.getLogger(__name__)


async def refresh_gauges(store: Store) -> GaugeSnapshot:
    snapshot = await store.refresh_gauge_snapshot()
    publish(snapshot)
    return snapshot


class _Rendered:
    """The snapshot gauges as last rendered, and the stored JSON text they came from."""

    gauges: str | None = None
    body: bytes | None = None


async def scrape(store: Store) -> bytes:
    """The /metrics body: this process's counters, then the gauges read from the database."""
    try:
        state = await store.read_scrape()
    except Exception as exc:  # counters are still worth serving; gauges keep their last value
        log.warning("metrics: could not read the gauges from the database (%r)", exc)
    else:
        if _Rendered.body is None or state.gauges != _Rendered.gauges:
            # Before the first refresh: zeros, not values this process held from before.
            publish(
                GaugeSnapshot(**orjson.loads(state.gauges))
                if state.gauges is not None
                else GaugeSnapshot.zero()
            )
            _Rendered.gauges = state.gauges
            _Rendered.body = metrics.render(metrics.SNAPSHOT_REGISTRY)
        metrics.GAUGES_AGE.set(state.gauges_age if state.gauges is not None else -1)
        publish_heartbeats(state.heartbeats)
    if _Rendered.body is None:  # the database was never reached: render the zeros as they are
        _Rendered.body = metrics.render(metrics.SNAPSHOT_REGISTRY)
    return metrics.render(metrics.REGISTRY) + _Rendered.body + metrics.render(metrics.LIVE_REGISTRY)


def publish_heartbeats(beats: list[WorkerHeartbeat]) -> None:
    """The workers' heartbeats, read at every scrape (one row per worker process and role):
    they must not depend on housekeeping, which runs in the workers they watch."""
    live = {(beat.process, beat.role) for beat in beats}
    for labels in _heartbeat_series - live:  # a pruned process's series ends
        metrics.WORKER_LAST_CLAIM.remove(*labels)
    _heartbeat_series.intersection_update(live)
    for beat in beats:
        metrics.WORKER_LAST_CLAIM.labels(process=beat.process, role=beat.role).set(beat.last_claim)
        _heartbeat_series.add((beat.process, beat.role))


# The (process, role) series WORKER_LAST_CLAIM holds.
_heartbeat_series: set[tuple[str, str]] = set()


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
