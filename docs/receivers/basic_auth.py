"""A receiver that authenticates broker with a Basic token instead of a signature, as the eKYC
vendor's customers do (registration with ``basicAuth`` and ``signature.scheme: "none"``).

    pip install aiohttp
    WEBHOOK_BASIC_AUTH='broker:a-long-random-password' python basic_auth.py

broker sends ``Authorization: Basic <base64 of user:password>``; the receiver compares the whole
header in constant time. Use HTTPS in production: the token travels with every request. Answer
within the registration's ``delivery.timeoutSeconds`` (5 s for that vendor's single attempt).
"""

from __future__ import annotations

import base64
import hmac
import json
import os

from aiohttp import web


def handle(event: dict) -> None:
    """Your code: queue the work and return quickly (broker waits for the answer)."""
    print(event["eventName"], event["resources"], flush=True)


def make_app(credentials: str) -> web.Application:
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
    seen: set[str] = set()  # at-least-once: keep this in your database, not in memory

    async def hook(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="hook"'})
        event = json.loads(await request.read())
        if event["id"] not in seen:
            seen.add(event["id"])
            handle(event)
        return web.Response(status=200)

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(os.environ["WEBHOOK_BASIC_AUTH"]),
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "9000")),
    )
