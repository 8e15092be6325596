"""Latency histograms of attempt durations, and percentiles estimated from them.

The buckets are those of migration 0009 (``broker_latency_bucket``): bucket 0 holds 0 ms,
bucket k (1..49) holds [1.25^(k-1), 1.25^k) ms, bucket 50 everything from 1.25^49 ms (~56 s).
Histograms of any number of rollup rows add bucket by bucket, so a period's percentiles need no
attempt rows. The estimate of a percentile is the geometric middle of the bucket that holds the
nearest-rank value, kept within the integers the bucket can hold: the true value is in the same
bucket, so the estimate is within a factor sqrt(1.25) of it (under 12% either way; exact for
durations under 5 ms, where a bucket holds at most one integer). The last bucket is open; its
estimate is its lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

BUCKETS = 51
FACTOR = 1.25


def bucket_of(ms: int) -> int:
    """The bucket a duration falls in (the SQL function's rule, for tests and the bench)."""
    if ms < 1:
        return 0
    return min(BUCKETS - 1, math.floor(math.log(ms) / math.log(FACTOR)) + 1)


def bucket_estimate(k: int) -> float:
    """The value reported for a percentile that falls in bucket k, in ms."""
    if k == 0:
        return 0.0
    low = FACTOR ** (k - 1)
    if k == BUCKETS - 1:
        return float(math.ceil(low))
    high = FACTOR**k
    smallest, largest = math.ceil(low), math.ceil(high) - 1  # the integers the bucket holds
    if largest <= smallest:
        return float(smallest)
    return round(min(max(math.sqrt(low * high), smallest), largest), 1)


def add(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = [0] * BUCKETS
    for histogram in histograms:
        for i, n in enumerate(histogram):
            total[i] += n
    return total


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) by nearest rank, None for an empty histogram."""
    count = sum(histogram)
    if count == 0:
        return None
    rank = max(1, math.ceil(q * count))
    seen = 0
    for k, n in enumerate(histogram):
        seen += n
        if seen >= rank:
            return bucket_estimate(k)
    raise AssertionError("unreachable: rank <= count")
