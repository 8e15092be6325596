"""Each signature scheme, verified the way its vendor tells receivers to verify it.

Standard Webhooks with the ``standardwebhooks`` package; the hex HMAC with the messaging vendor's
own example (``verify-signature.js``: ``signature === `sha256=${hex}```), run by Node.js when it
is installed and always as its line-by-line Python transcription.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from broker.domain.policy import SignaturePolicy, SignatureScheme, signature_spec
from broker.domain.signatures import hex_hmac, secret_problem, signature_headers
from broker.domain.signing import generate_secret

BODY = json.dumps({"id": "0190", "eventName": "Core.Account.Opened", "resources": ["a/1"]}).encode()
HMAC = SignatureScheme.HMAC_SHA256_HEX
MSG_ID = "0190a1b2-0000-7000-8000-000000000001"

# The messaging vendor's verify-signature.js, as published (the Express part left out).
VENDOR_JS = """
const crypto = require('crypto');

function verifyWebhookSignature(payload, signature, secret) {
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(payload)
    .digest('hex');

  return signature === `sha256=${expectedSignature}`;
}
"""


def vendor_python(payload: bytes, signature: str, secret: str) -> bool:
    """The vendor's function in Python, comparing exactly as it does (the whole header)."""
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return signature == f"sha256={expected}"


def vendor_node(payload: bytes, signature: str, secret: str) -> bool:
    script = (
        VENDOR_JS
        + "const [p, s, k] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        + "process.stdout.write(String(verifyWebhookSignature(Buffer.from(p, 'base64'), s, k)));"
    )
    import base64

    stdin = json.dumps([base64.b64encode(payload).decode(), signature, secret])
    out = subprocess.run(
        ["node", "-e", script], input=stdin, capture_output=True, text=True, check=True
    )
    return out.stdout == "true"


VERIFIERS = [vendor_python]
if shutil.which("node"):
    VERIFIERS.append(vendor_node)


def sign(policy: SignaturePolicy, secrets: list[str], *, ts: int | None = None) -> dict[str, str]:
    return signature_headers(
        signature_spec(policy),
        msg_id=MSG_ID,
        body=BODY,
        secrets=secrets,
        timestamp=int(time.time()) if ts is None else ts,
    )


# ---------------------------------------------------------------------- standard-webhooks


def test_standard_webhooks_verifies_with_the_package():
    secret = generate_secret()
    headers = sign(SignaturePolicy(), [secret])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == MSG_ID
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


def test_standard_webhooks_signs_with_both_secrets_during_a_rotation():
    new, old = generate_secret(), generate_secret()
    headers = sign(SignaturePolicy(scheme=SignatureScheme.STANDARD_WEBHOOKS), [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):  # a receiver holding either one accepts the delivery
        Webhook(secret).verify(BODY, headers)


def test_a_previous_secret_the_scheme_cannot_use_is_skipped():
    new = generate_secret()
    headers = sign(SignaturePolicy(), [new, "an-hmac-era-secret-0123"])
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(BODY, headers)


# ---------------------------------------------------------------------- hmac-sha256-hex


@pytest.mark.parametrize("verify", VERIFIERS)
def test_hmac_hex_passes_the_vendors_own_check(verify):
    secret = "optional-shared-secret"
    headers = sign(SignaturePolicy(scheme=HMAC, header="X-Aerostic-Signature"), [secret])
    assert list(headers) == ["X-Aerostic-Signature"]
    signature = headers["X-Aerostic-Signature"]
    assert verify(BODY, signature, secret)
    assert not verify(BODY, signature, "another-shared-secret")
    assert not verify(BODY + b"\n", signature, secret)


def test_hmac_hex_defaults_and_lowercase_hex():
    secret = "s3cr3t-s3cr3t-s3cr3t"
    headers = sign(SignaturePolicy(scheme=HMAC), [secret])
    value = headers["X-Webhook-Signature"]
    assert value.startswith("sha256=")
    digest = value.removeprefix("sha256=")
    assert len(digest) == 64 and digest == digest.lower()
    assert digest == hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()


def test_hmac_hex_with_a_timestamp_header_covers_timestamp_and_body():
    secret = "s3cr3t-s3cr3t-s3cr3t"
    policy = SignaturePolicy(
        scheme=HMAC, header="X-Signature", prefix="", timestamp_header="Request-Timestamp"
    )
    headers = sign(policy, [secret], ts=1700000000)
    assert headers["Request-Timestamp"] == "1700000000"
    expected = hmac.new(secret.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == expected
    assert headers["X-Signature"] != hex_hmac(secret, BODY)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_hmac_hex_during_a_rotation_holds_one_signature_per_secret_newest_first(verify):
    new, old = "the-new-secret-0123456", "the-old-secret-0123456"
    value = sign(SignaturePolicy(scheme=HMAC), [new, old])["X-Webhook-Signature"]
    parts = value.split(" ")
    assert len(parts) == 2
    # The vendor's check compares the whole header: a receiver splits it and checks each part.
    assert verify(BODY, parts[0], new)
    assert verify(BODY, parts[1], old)
    assert not verify(BODY, value, new)


# ---------------------------------------------------------------------- none and secrets


def test_scheme_none_adds_no_signature_header():
    assert sign(SignaturePolicy(scheme=SignatureScheme.NONE), [generate_secret()]) == {}


def test_secret_rules_per_scheme():
    whsec = generate_secret()
    assert secret_problem(SignatureScheme.STANDARD_WEBHOOKS, whsec) is None
    assert secret_problem(SignatureScheme.STANDARD_WEBHOOKS, "optional-shared-secret")
    for scheme in (HMAC, SignatureScheme.NONE):
        assert secret_problem(scheme, whsec) is None  # a generated secret serves every scheme
        assert secret_problem(scheme, "optional-shared-secret") is None
        assert secret_problem(scheme, "x" * 16) is None
        assert secret_problem(scheme, "x" * 256) is None
        assert secret_problem(scheme, "x" * 15)
        assert secret_problem(scheme, "x" * 257)
        assert secret_problem(scheme, "tab\tinside-secret")
        assert secret_problem(scheme, "non-ascii-secrét-0123")
