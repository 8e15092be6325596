"""The delivery ceiling: a bare aiohttp client POSTing the same bodies to the same receiver.

``python -m bench.ceiling --port N --count K --concurrency C --seconds S --url-path /hook/x ...``
runs in its own process (as the delivery worker does), builds and signs K event bodies of the
same shape the worker sends (10 resources each) before the clock starts, then POSTs them with C
concurrent requests over one ``aiohttp.ClientSession`` (connector limit C, keep-alive), and
prints one JSON line: ``{"sent", "ok", "seconds", "per_s", "cpu_s"}``. No database, no bookkeeping: what
is left is the cost of aiohttp's client plus the receiver, the upper bound a Python worker on
this machine could reach.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import orjson

from broker.domain.ids import uuid7
from broker.domain.payload import event_body
from broker.http.sender import signed_headers


def build(
    count: int, paths: list[str], secret: str, port: int
) -> list[tuple[str, bytes, dict[str, str]]]:
    partner = uuid7()
    regs = [uuid.uuid4() for _ in paths]
    created = datetime.now(UTC)
    out = []
    for i in range(count):
        event_id = uuid7()
        k = i % len(paths)
        body = event_body(
            event_id=event_id,
            event_name="Bench.Delivery.Done",
            partner_id=partner,
            registration_id=regs[k],
            created_at=created,
            previous_attempted_at=None,
            resources=[f"core/v1/dda/accounts/{i * 10 + j}" for j in range(10)],
        )
        headers = signed_headers(
            msg_id=str(event_id), body=body, secrets=[secret], basic_auth=None, now=time.time()
        )
        out.append((f"http://127.0.0.1:{port}{paths[k]}", body, headers))
    return out


async def run(args: argparse.Namespace) -> dict[str, float]:
    requests = build(args.count, args.url_path, args.secret, args.port)
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0)
    ok = 0
    sent = 0
    next_index = 0
    deadline = time.monotonic() + args.seconds
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=15), auto_decompress=False
    ) as session:

        async def one_client() -> None:
            nonlocal ok, sent, next_index
            while next_index < len(requests) and time.monotonic() < deadline:
                url, body, headers = requests[next_index]
                next_index += 1
                sent += 1
                async with session.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        ok += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(args.concurrency)))
        seconds = time.perf_counter() - started
    return {"sent": sent, "ok": ok, "seconds": seconds, "per_s": ok / seconds if seconds else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--url-path", action="append", required=True)
    args = parser.parse_args()
    outcome = asyncio.run(run(args))
    # Its own CPU (the runner's sampler can miss a process that lives for under a second).
    usage = resource.getrusage(resource.RUSAGE_SELF)
    outcome["cpu_s"] = usage.ru_utime + usage.ru_stime
    print(orjson.dumps(outcome).decode(), flush=True)


if __name__ == "__main__":
    main()
