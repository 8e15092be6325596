"""The store: the one object that talks SQL.

Every query runs through it, by name from ``sql/queries``, and comes back as domain objects; the
API and the workers hold a :class:`Store` and never touch the pool. It is composed of one class
per part of the flow, each in its own module, so that each file stays small and about one thing:

- ``catalog``: partners, keys and event types;   - ``registrations``: registrations, state steps;
- ``ingest``: group-committed resource events;  - ``windows``: closing windows into events;
- ``delivery``: claims, leases and results;    - ``history``: the partner events API;
- ``upkeep``: gauges and housekeeping;       - ``runtime``: admin token, leases, portal links.
- ``limits``: shared rate-limit buckets;       - ``stats``: attempt rollups, per-period stats.
- ``replay``: requeue a time range;          - ``heartbeats``: worker liveness for /metrics.
"""

from __future__ import annotations

from broker.domain.windows import WindowRules
from broker.store.catalog import CatalogQueries
from broker.store.delivery import DeliveryQueries
from broker.store.heartbeats import HeartbeatQueries
from broker.store.history import HistoryQueries
from broker.store.ingest import IngestQueries
from broker.store.limits import LimitQueries
from broker.store.records import (
    ClaimedDelivery,
    DeliveryResult,
    DeliveryTarget,
    GaugeSnapshot,
    IngestAnswer,
    IngestRequest,
    WindowCloseResult,
    hash_key,
)
from broker.store.registrations import RegistrationQueries
from broker.store.replay import ReplayQueries
from broker.store.runtime import RuntimeQueries
from broker.store.stats import StatsQueries
from broker.store.upkeep import UpkeepQueries
from broker.store.windows import WindowQueries


class Store(
    CatalogQueries,
    RegistrationQueries,
    IngestQueries,
    WindowQueries,
    DeliveryQueries,
    HistoryQueries,
    ReplayQueries,
    UpkeepQueries,
    HeartbeatQueries,
    RuntimeQueries,
    LimitQueries,
    StatsQueries,
):
    """Every query broker runs, on one pool."""


__all__ = [
    "ClaimedDelivery",
    "DeliveryResult",
    "DeliveryTarget",
    "GaugeSnapshot",
    "IngestAnswer",
    "IngestRequest",
    "Store",
    "WindowCloseResult",
    "WindowRules",
    "hash_key",
]
