"""Worker heartbeats (``worker_heartbeats``, migration 0010): written by each worker process
about once a second, read by every /metrics scrape (with the gauge snapshot, in one round trip),
pruned by housekeeping."""

from __future__ import annotations

from dataclasses import dataclass

from broker.store.base import StoreBase
from broker.store.queries import Q


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    process: str
    role: str
    last_claim: float  # unix time of the process's last claim for that role (database clock)


@dataclass(frozen=True, slots=True)
class ScrapeState:
    """What one /metrics scrape reads from the database."""

    # The stored gauge snapshot as JSON text (GaugeSnapshot's fields but age_seconds); None
    # before housekeeping's first refresh.
    gauges: str | None
    gauges_age: float
    heartbeats: list[WorkerHeartbeat]


class HeartbeatQueries(StoreBase):
    async def write_heartbeats(self, process: str, ages: dict[str, float]) -> None:
        """``ages``: per role, seconds since this process last claimed (or looked for) work."""
        await self.pool.execute(Q.write_heartbeats, process, list(ages), list(ages.values()))

    async def read_scrape(self) -> ScrapeState:
        row = await self.pool.fetchrow(Q.read_scrape)
        return ScrapeState(
            gauges=row["gauges"],
            gauges_age=max(row["gauges_age"] or 0.0, 0.0),
            heartbeats=[
                WorkerHeartbeat(process, role, at)
                for process, role, at in zip(
                    row["processes"], row["roles"], row["last_claims"], strict=True
                )
            ],
        )

    async def prune_heartbeats(self, older_than_seconds: float) -> int:
        return int((await self.pool.execute(Q.prune_heartbeats, older_than_seconds)).split()[-1])
