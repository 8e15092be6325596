"""The pgqueuer worker of the side-by-side: what a Python team would run instead of broker.

``python -m bench.peers.consumer --dsn URL --targets FILE [--batch-size 64] [--concurrency 256]``

One process, one ``QueueManager`` on a dedicated asyncpg connection (pgqueuer's performance
guide: a direct connection for the manager, not a pool), entrypoint ``webhook``. Each job's
payload is the event body; its headers name the target (``target``, a key of the targets file:
``{name: {"url": ..., "secret": "whsec_..."}}``) and the message id (``id``). The job POSTs
the body through broker's own ``send`` (Standard Webhooks signature, 1 KiB response excerpt,
timeout) over one aiohttp session built by broker's ``make_outbound_session``, so the
per-request work is the same as a broker delivery's and what differs is the queue around it.
A failed POST asks pgqueuer for a retry in 5 s (``RetryRequested``); none fail here.

Prints ``consumer ready`` once connected and configured; SIGTERM stops the manager.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
from pgqueuer import AsyncpgDriver, Queries, QueueManager, RetryRequested
from pgqueuer.models import Job

from broker.http.connector import make_outbound_session
from broker.http.sender import send
from broker.loop import run as run_loop

ENTRYPOINT = "webhook"
TIMEOUT_SECONDS = 15.0  # broker's default BROKER_DELIVERY_TIMEOUT_SECONDS


async def consume(args: argparse.Namespace, targets: dict[str, dict[str, str]]) -> None:
    connection = await asyncpg.connect(args.dsn)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))
    session = make_outbound_session(
        allow_private=True, limit=args.concurrency, total_timeout=TIMEOUT_SECONDS
    )

    @manager.entrypoint(ENTRYPOINT)
    async def webhook(job: Job) -> None:
        headers = job.headers or {}
        target = targets[str(headers["target"])]
        outcome = await send(
            session,
            url=target["url"],
            msg_id=str(headers["id"]),
            body=job.payload or b"",
            secrets=[target["secret"]],
            basic_auth=None,
            timeout=TIMEOUT_SECONDS,
        )
        if not outcome.success:
            raise RetryRequested(delay=timedelta(seconds=5), reason=outcome.error)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, manager.shutdown.set)
    print("consumer ready", flush=True)
    try:
        await manager.run(batch_size=args.batch_size, max_concurrent_tasks=args.concurrency)
    finally:
        await session.close()
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--targets", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    run_loop(consume(args, orjson.loads(Path(args.targets).read_bytes())))


if __name__ == "__main__":
    main()
