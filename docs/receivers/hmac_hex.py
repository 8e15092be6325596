"""A receiver for the ``hmac-sha256-hex`` scheme: a header such as ``X-Aerostic-Signature`` or
``X-Webhook-Signature`` holding ``sha256=`` + the lowercase hex HMAC-SHA256 of the body.

    pip install aiohttp
    WEBHOOK_SECRET=your-shared-secret SIGNATURE_HEADER=X-Aerostic-Signature python hmac_hex.py

The check is the one the messaging vendor publishes (``verify-signature.js``): compute the HMAC of
the raw body with the secret's UTF-8 bytes, and compare the whole header with ``sha256=<hex>``;
``hmac.compare_digest`` makes that comparison in constant time. Two additions for broker:
during a secret rotation the header holds one signature per live secret, space-separated, so each
part is checked; and with ``signature.timestampHeader`` set (``TIMESTAMP_HEADER=Request-Timestamp``)
the HMAC covers ``"{timestamp}.{body}"`` and a timestamp more than five minutes old is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time

from aiohttp import web

TOLERANCE_SECONDS = 300


def verify_webhook_signature(payload: bytes, signature: str, secret: str, prefix: str) -> bool:
    expected_signature = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, f"{prefix}{expected_signature}")


def handle(event: dict) -> None:
    """Your code: queue the work and return quickly (broker waits for the answer)."""
    print(event["eventName"], event["resources"], flush=True)


def make_app(
    secret: str,
    *,
    header: str = "X-Webhook-Signature",
    prefix: str = "sha256=",
    timestamp_header: str | None = None,
) -> web.Application:
    seen: set[str] = set()  # at-least-once: keep this in your database, not in memory

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()  # the raw bytes: re-serialised JSON would not verify
        signed = body
        if timestamp_header:
            stamp = request.headers.get(timestamp_header, "")
            if not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE_SECONDS:
                return web.Response(status=401, text="stale or missing timestamp")
            signed = stamp.encode() + b"." + body
        signatures = request.headers.get(header, "").split(" ")
        if not any(verify_webhook_signature(signed, s, secret, prefix) for s in signatures):
            return web.Response(status=401, text="invalid signature")
        event = json.loads(body)
        if event["id"] not in seen:
            seen.add(event["id"])
            handle(event)
        return web.Response(status=200, text='{"received": true}', content_type="application/json")

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(
            os.environ["WEBHOOK_SECRET"],
            header=os.environ.get("SIGNATURE_HEADER", "X-Webhook-Signature"),
            prefix=os.environ.get("SIGNATURE_PREFIX", "sha256="),
            timestamp_header=os.environ.get("TIMESTAMP_HEADER") or None,
        ),
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "9000")),
    )
