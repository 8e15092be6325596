"""A deliberately small HTTP/1.1 keep-alive client for the load generator.

The load generator shares a 2-core machine with the processes it measures, so it must be cheap:
aiohttp's client costs several times more CPU per request than this one. Requests are prebuilt
bytes (method line, headers and body encoded once), written on one persistent connection; the
response is read by Content-Length (or chunked). Only 127.0.0.1 is ever dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"


def build_request(
    method: str,
    path: str,
    port: int,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Reply:
    status: int
    body: bytes


class HttpConnection:
    """One keep-alive connection; not safe for concurrent use (one request at a time)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(LOOPBACK, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def send(self, raw_request: bytes, *, timeout: float = 30.0) -> Reply:
        if self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(raw_request)
                head = await self._reader.readuntil(b"\r\n\r\n")
                status_line, _, header_block = head.partition(b"\r\n")
                status = int(status_line.split(b" ", 2)[1])
                length = -1
                chunked = False
                close = False
                for line in header_block.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value.strip())
                    elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                    elif lname == b"connection" and b"close" in value.lower():
                        close = True
                if chunked:
                    body = await self._read_chunked()
                elif length >= 0:
                    body = await self._reader.readexactly(length)
                else:
                    body = await self._reader.read()
                    close = True
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return Reply(status=status, body=body)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)


async def request_once(
    port: int, raw_request: bytes, *, timeout: float = 30.0
) -> Reply:  # pragma: no cover - convenience
    conn = HttpConnection(port)
    try:
        return await conn.send(raw_request, timeout=timeout)
    finally:
        await conn.close()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def now() -> float:
    return time.perf_counter()
