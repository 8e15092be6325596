"""A receiver for broker deliveries signed with Standard Webhooks (the default scheme).

    pip install aiohttp standardwebhooks
    WEBHOOK_SECRET=whsec_... python standard_webhooks.py     # listens on 127.0.0.1:9000/hook

The ``standardwebhooks`` package checks ``webhook-signature`` against ``webhook-id``,
``webhook-timestamp`` and the raw body, and refuses timestamps more than five minutes away from
now (a replayed capture). During a secret rotation the header carries one signature per live
secret; the package accepts the delivery when any of them matches.
"""

from __future__ import annotations

import json
import os

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def handle(event: dict) -> None:
    """Your code: queue the work and return quickly (broker waits for the answer)."""
    print(event["eventName"], event["resources"], flush=True)


def make_app(secret: str) -> web.Application:
    webhook = Webhook(secret)
    seen: set[str] = set()  # at-least-once: keep this in your database, not in memory

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()  # the raw bytes: re-serialised JSON would not verify
        try:
            webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.Response(status=400, text="bad signature")
        event = json.loads(body)
        if event["id"] not in seen:  # also the webhook-id header
            seen.add(event["id"])
            handle(event)
        return web.Response(status=204)

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(os.environ["WEBHOOK_SECRET"]),
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "9000")),
    )
