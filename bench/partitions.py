"""What the history's day partitions cost the result flush's update, by partition count.

    .venv/bin/python -m bench.partitions [--partitions 4,34] [--statements 1500]

The flush updates each delivered event object's history row by primary key, in batches (about
120 rows a statement in `make bench`), through a prepared statement whose generic plan cannot
prune partitions at plan time: PostgreSQL 15 locks every partition and index of the table at
each execution. A 30-day retention keeps about 34 day partitions. This builds a table shaped
like ``events`` (range-partitioned by id, the history's four status indexes plus the primary
key), 200,000 rows in the newest partition, and times a 120-row update by primary key with
each partition count, alternating. Its own database on the server ``make bench`` uses
(``BROKER_BENCH_DATABASE_URL``, else ``BROKER_TEST_DATABASE_URL``, else the embedded pgserver),
dropped at the end; the last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg
import orjson

from bench.run import _with_database, base_database_url

ROWS_PER_STATEMENT = 120
INDEXES = [
    "(p, status, id DESC)",
    "(p, name, status, id DESC)",
    "(p, r, status, id DESC)",
    "(p, r, name, status, id DESC)",
]


async def per_update_ms(url: str, partitions: int, statements: int) -> float:
    conn = await asyncpg.connect(url, server_settings={"jit": "off"})
    try:
        await conn.execute("DROP TABLE IF EXISTS history_shape")
        await conn.execute(
            "CREATE TABLE history_shape (id bigint NOT NULL, p int NOT NULL, r int NOT NULL,"
            " name text NOT NULL, status text NOT NULL, n int NOT NULL DEFAULT 0,"
            " PRIMARY KEY (id)) PARTITION BY RANGE (id)"
        )
        for columns in INDEXES:
            await conn.execute(f"CREATE INDEX ON history_shape {columns}")
        for k in range(partitions):
            await conn.execute(
                f"CREATE TABLE history_shape_{k} PARTITION OF history_shape"
                f" FOR VALUES FROM ({k * 10**6}) TO ({(k + 1) * 10**6})"
            )
        newest = (partitions - 1) * 10**6
        await conn.execute(
            "INSERT INTO history_shape SELECT $1 + g, 1, g % 32, 'Core.Account.Opened',"
            " 'Pending' FROM generate_series(0, 199999) AS g",
            newest,
        )
        await conn.execute("VACUUM ANALYZE history_shape")
        update = await conn.prepare(
            "UPDATE history_shape SET status = 'Success', n = n + 1 WHERE id = ANY($1::bigint[])"
        )
        timings = []
        for i in range(statements):
            first = newest + i * ROWS_PER_STATEMENT
            started = time.perf_counter()
            await update.fetch(list(range(first, first + ROWS_PER_STATEMENT)))
            timings.append(time.perf_counter() - started)
        return statistics.median(timings[statements // 8 :]) * 1e3  # after a warm-up
    finally:
        await conn.execute("DROP TABLE IF EXISTS history_shape")
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", default="4,34")
    parser.add_argument("--statements", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.partitions.split(",")]
    url, _ = base_database_url()
    name = f"bench_partitions_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    measured: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for _ in range(args.rounds):
            for n in counts:
                ms = await per_update_ms(_with_database(url, name), n, args.statements)
                measured[n].append(ms)
                print(f"{n} partitions: {ms:.3f} ms per {ROWS_PER_STATEMENT}-row update")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    medians = {n: statistics.median(v) for n, v in measured.items()}
    result = {
        "rows_per_statement": ROWS_PER_STATEMENT,
        "ms_per_update_by_partitions": {str(n): round(v, 3) for n, v in medians.items()},
        "us_per_row_by_partitions": {
            str(n): round(v * 1e3 / ROWS_PER_STATEMENT, 2) for n, v in medians.items()
        },
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    asyncio.run(main())
