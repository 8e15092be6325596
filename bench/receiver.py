"""The webhook receiver of the benchmark: an aiohttp server in its own process.

``python -m bench.receiver --port N`` serves on 127.0.0.1:

- ``POST /hook/{name}``: a delivery. Counted; in ``parse`` mode its body is read as an event
  object (resources counted, the first resource and the arrival time kept for latency probes);
  with a secret configured for ``{name}`` the Standard Webhooks signature is checked too.
  Answers 200 "ok".
- ``POST /_config`` ``{"parse": bool, "secrets": {name: "whsec_..."}}``; ``POST /_reset``;
  ``GET /_stats``; ``GET /_arrivals`` (``[[first_resource, unix_time], ...]`` in parse mode);
  ``GET /_names`` (per hook name: arrivals, out-of-order arrivals, ``?times=name`` for times).

It runs apart from the load generator and the broker so that its event loop has its own core
share, as a partner's endpoint would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import orjson
from aiohttp import web


class State:
    def __init__(self) -> None:
        self.parse = False
        self.keys: dict[str, bytes] = {}
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.resources = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.verified = 0
        self.bad_signatures = 0
        self.arrivals: list[tuple[str, float]] = []
        self.ids: set[str] = set()
        self.duplicates = 0
        self.hung = 0
        # Per hook name (parse mode): arrival times and arrivals older than one already seen
        # (by createdAt, then id), for the FIFO and rate-limit phases.
        self.by_name: dict[str, NameStats] = {}


class NameStats:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.newest: tuple[str, str] = ("", "")
        self.out_of_order = 0
        self.duplicates = 0
        self.ids: set[str] = set()

    def arrived(self, event: dict[str, Any], at: float) -> None:
        self.times.append(at)
        if event["id"] in self.ids:
            self.duplicates += 1  # a redelivery is not an ordering fault
            return
        self.ids.add(event["id"])
        key = (event["createdAt"], event["id"])
        if key < self.newest:
            self.out_of_order += 1
        self.newest = max(self.newest, key)


def _signature_ok(key: bytes, headers: Any, body: bytes) -> bool:
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    wanted = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for entry in headers.get("webhook-signature", "").split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, wanted):
            return True
    return False


def make_app(state: State) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        at = time.time()
        state.count += 1
        if state.first_at is None:
            state.first_at = at
        state.last_at = at
        if state.parse:
            event = orjson.loads(body)
            resources = event.get("resources") or []
            state.resources += len(resources)
            state.arrivals.append((resources[0] if resources else "", at))
            if event["id"] in state.ids:
                state.duplicates += 1
            state.ids.add(event["id"])
            name = request.match_info["name"]
            state.by_name.setdefault(name, NameStats()).arrived(event, at)
        key = state.keys.get(request.match_info["name"])
        if key is not None:
            if _signature_ok(key, request.headers, body):
                state.verified += 1
            else:
                state.bad_signatures += 1
        return web.Response(text="ok")

    async def config(request: web.Request) -> web.Response:
        body = await request.json()
        state.parse = bool(body.get("parse", state.parse))
        for name, secret in (body.get("secrets") or {}).items():
            state.keys[name] = base64.b64decode(secret.removeprefix("whsec_"))
        return web.json_response({"ok": True})

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": state.count,
                "resources": state.resources,
                "first_at": state.first_at,
                "last_at": state.last_at,
                "verified": state.verified,
                "bad_signatures": state.bad_signatures,
                "duplicates": state.duplicates,
                "hung": state.hung,
            }
        )

    async def names(request: web.Request) -> web.Response:
        """Per hook name: count, out-of-order and duplicate arrivals, first and last arrival;
        ``?times=name`` adds that name's arrival times."""
        wanted = request.query.get("times")
        out = {
            name: {
                "count": len(ns.times),
                "out_of_order": ns.out_of_order,
                "duplicates": ns.duplicates,
                "first_at": ns.times[0] if ns.times else None,
                "last_at": ns.times[-1] if ns.times else None,
                **({"times": ns.times} if name == wanted else {}),
            }
            for name, ns in state.by_name.items()
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def arrivals(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(state.arrivals), content_type="application/json")

    async def hang(request: web.Request) -> web.Response:
        # An endpoint that never answers (noisy_neighbour): the broker's timeout ends it.
        state.hung += 1
        await asyncio.sleep(3600)
        return web.Response(text="too late")

    async def hold(request: web.Request) -> web.Response:
        # A receiver that takes 50 ms per request (workers_scaling).
        await asyncio.sleep(0.05)
        return await hook(request)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook/{name}", hook)
    app.router.add_post("/hang/{name}", hang)
    app.router.add_post("/hold/{name}", hold)
    app.router.add_post("/_config", config)
    app.router.add_post("/_reset", reset)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_arrivals", arrivals)
    app.router.add_get("/_names", names)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    state = State()
    web.run_app(
        make_app(state),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=lambda *_: print("receiver ready", flush=True),
        shutdown_timeout=1,
    )


if __name__ == "__main__":
    main()
