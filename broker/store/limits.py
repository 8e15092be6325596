"""Rate limits shared by every broker process: token buckets in PostgreSQL.

A bucket per limited key (a producer key, a registration's test deliveries, a partner's) is one
row of the UNLOGGED ``rate_buckets`` table, refilled and taken from in one statement. Rows, not
per-process memory, so that N API processes allow the configured rate in total, not N times it;
UNLOGGED because a bucket is not worth a WAL write or a synchronous commit, and losing the table
in a crash or a failover only refills every bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.store.base import StoreBase
from broker.store.queries import Q


@dataclass(frozen=True, kw_only=True, slots=True)
class Bucket:
    key: str
    rate: float  # tokens per second
    burst: float  # capacity
    name: str = ""  # the limit in words, for the 429's detail


class LimitQueries(StoreBase):
    async def take_tokens(self, buckets: Sequence[Bucket]) -> list[tuple[Bucket, float]]:
        """Take one token from every bucket, or from none. Returns the buckets that refused, each
        with the seconds until it has a token again (empty: granted)."""
        if len(buckets) == 1:
            [bucket] = buckets
            row = await self.pool.fetchrow(Q.take_token, bucket.key, bucket.rate, bucket.burst)
            return [] if row["took"] else [(bucket, _wait(bucket, row["tokens"]))]
        refused: list[tuple[Bucket, float]] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                # Sorted, so two requests taking the same buckets lock them in the same order.
                for bucket in sorted(buckets, key=lambda b: b.key):
                    row = await conn.fetchrow(Q.take_token, bucket.key, bucket.rate, bucket.burst)
                    if not row["took"]:
                        refused.append((bucket, _wait(bucket, row["tokens"])))
                if refused:
                    raise _Refused  # rolled back: a refused request takes from no bucket
        except _Refused:
            pass
        return refused


class _Refused(Exception):
    pass


def _wait(bucket: Bucket, tokens: float) -> float:
    return max(0.001, (1 - tokens) / bucket.rate)
