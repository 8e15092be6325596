"""Key lookups shared by concurrent requests (the authentication side of group commit).

Every partner and producer request needs its key checked against ``api_keys``. One query per
request made that check the largest single cost of a small ingest request (a round trip: a send
on the socket, a wake-up of the backend, the reply). Here, the lookups of requests that arrive
while a query is running wait for the next query, which checks all of them at once; an idle
process still answers a lone request with one query, so latency stays one round trip.

Nothing is cached: every request's key is read from the database by a query that starts after
the request arrived, so a revocation committed before the request is always seen, in every
process ("revoked at once", API.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from broker.domain.models import Principal
from broker.store.queries import Q


class KeyLookups:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._waiting: dict[bytes, list[asyncio.Future[Principal | None]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def lookup(self, key_hash: bytes) -> Principal | None:
        """The live (not revoked) key with this SHA-256, or None."""
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key_hash, []).append(future)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="key-lookups")
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    rows = await self._pool.fetch(Q.principals_for_key_hashes, list(batch))
                except BaseException as exc:
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                found = {
                    bytes(r["key_hash"]): Principal(
                        kind=r["kind"], key_id=r["id"], partner_id=r["partner_id"]
                    )
                    for r in rows
                }
                for key_hash, futures in batch.items():
                    principal = found.get(key_hash)
                    for future in futures:
                        if not future.done():
                            future.set_result(principal)
        finally:
            self._runner = None
            if self._waiting:  # cancelled (shutdown) with requests still waiting
                for futures in self._waiting.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(ConnectionError("broker is shutting down"))
                self._waiting = {}
