"""Worker heartbeats (``worker_heartbeats``, migration 0010): written by each worker process
about once a second, read by every /metrics scrape, pruned by housekeeping."""

from __future__ import annotations

from dataclasses import dataclass

from broker.store.base import StoreBase
from broker.store.queries import Q


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    process: str
    role: str
    last_claim: float  # unix time of the process's last claim for that role (database clock)


class HeartbeatQueries(StoreBase):
    async def write_heartbeats(self, process: str, ages: dict[str, float]) -> None:
        """``ages``: per role, seconds since this process last claimed (or looked for) work."""
        await self.pool.execute(Q.write_heartbeats, process, list(ages), list(ages.values()))

    async def read_heartbeats(self) -> list[WorkerHeartbeat]:
        return [
            WorkerHeartbeat(r["process"], r["role"], r["last_claim"])
            for r in await self.pool.fetch(Q.read_heartbeats)
        ]

    async def prune_heartbeats(self, older_than_seconds: float) -> int:
        return int((await self.pool.execute(Q.prune_heartbeats, older_than_seconds)).split()[-1])
