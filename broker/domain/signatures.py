"""Signing a delivery the way its registration's receiver verifies it.

- ``standard-webhooks``: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>``, keyed with the bytes the base64 after
  ``whsec_`` stands for), as :mod:`broker.domain.signing` computes it.
- ``hmac-sha256-hex``: one header (default ``X-Webhook-Signature``) holding the prefix (default
  ``sha256=``) and the lowercase hex HMAC-SHA256 of the body, keyed with the UTF-8 bytes of the
  secret exactly as the partner holds it; with a timestamp header, the HMAC covers
  ``"{timestamp}.{body}"`` and that header carries the unix seconds.
- ``none``: no signature header at all.

During a rotation's grace period every live secret signs, newest first, space-separated, so a
receiver holding either secret verifies.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from broker.domain.policy import SignatureScheme, SignatureSpec
from broker.domain.signing import secret_key_bytes
from broker.domain.signing import sign as standard_signature

# Secrets given for hmac-sha256-hex (and none): what partners of such vendors hold.
HMAC_SECRET_LENGTH = (16, 256)


def secret_problem(scheme: SignatureScheme, secret: str) -> str | None:
    """Why ``secret`` cannot sign with ``scheme`` (None when it can)."""
    if scheme is SignatureScheme.STANDARD_WEBHOOKS:
        try:
            secret_key_bytes(secret)
        except ValueError as exc:
            return str(exc)
        return None
    low, high = HMAC_SECRET_LENGTH
    if not isinstance(secret, str) or not low <= len(secret) <= high:
        return f"must be {low} to {high} printable ASCII characters"
    if not all(" " <= c <= "~" for c in secret):
        return f"must be {low} to {high} printable ASCII characters"
    return None


def hex_hmac(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """Lowercase hex HMAC-SHA256 of the body (or of ``"{timestamp}.{body}"``)."""
    to_sign = body if timestamp is None else f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), to_sign, hashlib.sha256).hexdigest()


def signature_headers(
    spec: SignatureSpec,
    *,
    msg_id: str,
    body: bytes,
    secrets: Sequence[str],
    timestamp: int,
) -> dict[str, str]:
    """The headers that sign ``body``; ``secrets`` are the live ones, newest first.

    A secret the scheme cannot use (a previous secret kept from before a change of scheme) is
    skipped rather than failing the delivery: the current secret is checked against the scheme
    whenever either changes.
    """
    if spec.scheme is SignatureScheme.NONE:
        return {}
    if spec.scheme is SignatureScheme.STANDARD_WEBHOOKS:
        keys: list[bytes] = []
        for secret in secrets:
            try:
                keys.append(secret_key_bytes(secret))
            except ValueError:
                continue
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                standard_signature(key, msg_id, timestamp, body) for key in keys
            ),
        }
    assert spec.header is not None
    signed_at = timestamp if spec.timestamp_header else None
    headers = {
        spec.header: " ".join(
            spec.prefix + hex_hmac(secret, body, signed_at)
            for secret in secrets
            if secret_problem(spec.scheme, secret) is None
        )
    }
    if spec.timestamp_header:
        headers[spec.timestamp_header] = str(timestamp)
    return headers
