"""Operator metrics (Prometheus). Module-level so every part of one process shares them.

Three registries, by how often their values change, so that a scrape renders only what may have
moved (broker/workers/gauges.py): ``REGISTRY``, this process's counters and histogram;
``SNAPSHOT_REGISTRY``, the database-wide gauges, which change when housekeeping stores a new
snapshot (every few seconds) and are rendered once per snapshot; ``LIVE_REGISTRY``, what differs
at every scrape (the snapshot's age, the workers' heartbeats).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

from broker.domain.states import Status

# No ``*_created`` series: in the text format each counter and histogram gets a second family
# holding its creation time, a third of the lines of a scrape, which Prometheus does not use.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
SNAPSHOT_REGISTRY = CollectorRegistry(auto_describe=True)
LIVE_REGISTRY = CollectorRegistry(auto_describe=True)
# The worker loops whose due work and heartbeats /metrics reports.
WORKER_ROLES = ("delivery", "aggregator")

RESOURCE_EVENTS_INGESTED = Counter(
    "broker_resource_events_ingested_total", "Resource events durably accepted", registry=REGISTRY
)
WINDOWS_CLOSED = Counter(
    "broker_windows_closed_total", "Aggregation windows closed", registry=REGISTRY
)
EVENTS_CREATED = Counter(
    "broker_event_objects_created_total", "Event objects created at window close", registry=REGISTRY
)
ATTEMPTS = Counter(
    "broker_delivery_attempts_total",
    "Delivery attempts by outcome",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "broker_delivery_duration_seconds",
    "Duration of one delivery attempt (request to response)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
    registry=REGISTRY,
)
REGISTRATION_TRANSITIONS = Counter(
    "broker_registration_transitions_total",
    "Registration status changes",
    ["to"],
    registry=REGISTRY,
)
# Database-wide gauges, from the snapshot housekeeping refreshes every few seconds
# (broker/workers/gauges.py): every process reports the same values, so aggregate them with
# max(), not sum(). Suspended and Paused queues wait by design: alert on Active.
QUEUE_DEPTH = Gauge(
    "broker_queue_depth",
    "Pending event objects, by the status of their registration",
    ["registration_status"],
    registry=SNAPSHOT_REGISTRY,
)
QUEUE_OLDEST_AGE = Gauge(
    "broker_queue_oldest_pending_age_seconds",
    "Age of the oldest Pending event object, by the status of its registration",
    ["registration_status"],
    registry=SNAPSHOT_REGISTRY,
)
DELIVERY_LAG = Gauge(
    "broker_delivery_lag_seconds",
    "How long the oldest due, unclaimed event object of an Active registration has waited for a "
    "worker (near 0 while the workers keep up)",
    registry=SNAPSHOT_REGISTRY,
)
REGISTRATIONS_BY_STATUS = Gauge(
    "broker_registrations", "Registrations by status", ["status"], registry=SNAPSHOT_REGISTRY
)
BREAKERS = Gauge(
    "broker_delivery_breakers",
    "Registrations by the state of their delivery circuit breaker (back-pressure, not a status)",
    ["state"],
    registry=SNAPSHOT_REGISTRY,
)
OLDEST_DUE_AGE = Gauge(
    "broker_oldest_due_age_seconds",
    "Per worker role, how long the oldest due work has waited for a worker: delivery, the "
    "registration longest due for a claim; aggregator, the window longest past its close time "
    "(or operational event waiting to be windowed). Near 0 while workers keep up; it grows "
    "when none runs",
    ["role"],
    registry=SNAPSHOT_REGISTRY,
)
WORKER_LAST_CLAIM = Gauge(
    "broker_worker_last_claim_timestamp_seconds",
    "Per worker process and role, the unix time of its last claim (one that found nothing "
    "counts: an idle worker is alive), from worker_heartbeats; alert on time() minus the "
    "newest per role",
    ["process", "role"],
    registry=LIVE_REGISTRY,
)
GAUGES_AGE = Gauge(
    "broker_gauges_age_seconds",
    "Age of the snapshot the database-wide gauges come from (-1: none taken yet); a value far "
    "above BROKER_GAUGE_REFRESH_SECONDS means no process is running housekeeping",
    registry=LIVE_REGISTRY,
)
GAUGES_AGE.set(-1)

# Every label value exists from the start (at 0), so rate() and absent-series alerts work before
# the first failure or transition ever happens. The delivery path keeps its attempt counters'
# children (a labels() call costs more than the inc).
ATTEMPTS_BY_SUCCESS = {
    True: ATTEMPTS.labels(outcome="success"),
    False: ATTEMPTS.labels(outcome="failure"),
}
for _role in WORKER_ROLES:
    OLDEST_DUE_AGE.labels(role=_role)
for _state in ("closed", "open", "half-open"):
    BREAKERS.labels(state=_state)
for _status in Status:
    REGISTRATION_TRANSITIONS.labels(to=_status.value)
    REGISTRATIONS_BY_STATUS.labels(status=_status.value)
    QUEUE_DEPTH.labels(registration_status=_status.value)
    QUEUE_OLDEST_AGE.labels(registration_status=_status.value)


class _Family:
    """One collected family, as a collector of its own, for ``generate_latest``."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


# Per family name: the samples last rendered and their text.
_rendered: dict[str, tuple[list[object], bytes]] = {}


def render(registry: CollectorRegistry) -> bytes:
    """``generate_latest(registry)``, reusing a family's text while its samples are unchanged:
    most families of a scrape did not move since the last one (a worker's counters in an API
    process stay 0), and formatting was most of what rendering cost."""
    parts = []
    for family in registry.collect():
        last = _rendered.get(family.name)
        if last is None or last[0] != family.samples:
            last = (list(family.samples), generate_latest(_Family(family)))
            _rendered[family.name] = last
        parts.append(last[1])
    return b"".join(parts)
