"""Per-registration delivery policy: defaults, PATCH merging and the contract's rules."""

from __future__ import annotations

import pytest

from broker.domain.policy import (
    DEFAULT_POLICY,
    MAX_HEADERS,
    Defaults,
    DeliveryPolicy,
    Ordering,
    RegistrationPolicy,
    SignaturePolicy,
    SignatureScheme,
    merge_headers,
    patched,
    policy_errors,
    resolve,
    signature_spec,
)

DEFAULTS = Defaults(timeout_seconds=15.0, retry_schedule=(5, 30, 120))
HMAC = SignatureScheme.HMAC_SHA256_HEX


def fields(policy: RegistrationPolicy) -> dict[str, str]:
    return {e.field: e.message for e in policy_errors(policy)}


# ---------------------------------------------------------------------- resolution


def test_an_empty_policy_is_the_global_default():
    effective = resolve(DEFAULT_POLICY, DEFAULTS)
    assert effective.timeout_seconds == 15.0
    assert effective.retry_schedule == (5, 30, 120)
    assert effective.suspend_after_consecutive_failures is None
    assert effective.rate_limit_per_second is None
    assert effective.ordering is Ordering.UNORDERED
    assert effective.signature.scheme is SignatureScheme.STANDARD_WEBHOOKS
    assert effective.signature.own_headers() == ()
    assert effective.headers == ()


def test_set_values_win_over_the_defaults_and_an_empty_schedule_is_a_choice():
    policy = RegistrationPolicy(
        delivery=DeliveryPolicy(
            timeout_seconds=5,
            retry_schedule=(),
            suspend_after_consecutive_failures=5,
            rate_limit_per_second=50,
            ordering=Ordering.FIFO,
        )
    )
    effective = resolve(policy, DEFAULTS)
    assert effective.timeout_seconds == 5
    assert effective.retry_schedule == ()  # a single attempt, not the global schedule
    assert effective.suspend_after_consecutive_failures == 5
    assert effective.rate_limit_per_second == 50
    assert effective.ordering is Ordering.FIFO


def test_hmac_signature_defaults_to_the_job_status_vendors_header_and_prefix():
    spec = signature_spec(SignaturePolicy(scheme=HMAC))
    assert (spec.header, spec.prefix, spec.timestamp_header) == (
        "X-Webhook-Signature",
        "sha256=",
        None,
    )
    spec = signature_spec(
        SignaturePolicy(scheme=HMAC, header="X-Aerostic-Signature", prefix="", timestamp_header="T")
    )
    assert (spec.header, spec.prefix, spec.own_headers()) == (
        "X-Aerostic-Signature",
        "",  # an explicit empty prefix is kept, not replaced by the default
        ("X-Aerostic-Signature", "T"),
    )


# ---------------------------------------------------------------------- PATCH semantics


def test_patch_changes_only_the_named_fields_and_null_restores_a_default():
    current = RegistrationPolicy(
        delivery=DeliveryPolicy(timeout_seconds=5, retry_schedule=(30, 300)),
        signature=SignaturePolicy(scheme=HMAC, header="X-Sig"),
        headers=(("X-Tenant", "acme"),),
    )
    new = patched(current, delivery={"timeout_seconds": None, "ordering": Ordering.FIFO})
    assert new.delivery == DeliveryPolicy(retry_schedule=(30, 300), ordering=Ordering.FIFO)
    assert new.signature == current.signature
    assert new.headers == current.headers
    assert patched(current, reset_delivery=True).delivery == DeliveryPolicy()
    assert patched(current, reset_signature=True, signature={"prefix": "v="}).signature == (
        SignaturePolicy(prefix="v=")
    )
    assert patched(current, reset_headers=True).headers == ()


def test_headers_merge_case_insensitively_and_null_removes_one():
    current = (("X-Tenant", "acme"), ("X-Region", "eu"))
    assert merge_headers(current, {"x-tenant": "beta", "X-Region": None, "X-New": "1"}) == (
        ("x-tenant", "beta"),
        ("X-New", "1"),
    )
    assert merge_headers(current, None) == ()
    assert merge_headers(current, {}) == current


# ---------------------------------------------------------------------- rules


def test_the_contract_example_is_valid():
    policy = RegistrationPolicy(
        delivery=DeliveryPolicy(
            timeout_seconds=5,
            retry_schedule=(30, 300, 1800, 7200),
            suspend_after_consecutive_failures=5,
            rate_limit_per_second=50,
            ordering=Ordering.FIFO,
        ),
        signature=SignaturePolicy(scheme=HMAC, header="X-Aerostic-Signature", prefix="sha256="),
        headers=(("X-Tenant", "acme"),),
    )
    assert policy_errors(policy) == []


@pytest.mark.parametrize(
    ("delivery", "field"),
    [
        (DeliveryPolicy(timeout_seconds=0.5), "delivery.timeoutSeconds"),
        (DeliveryPolicy(timeout_seconds=31), "delivery.timeoutSeconds"),
        (DeliveryPolicy(timeout_seconds=True), "delivery.timeoutSeconds"),  # type: ignore[arg-type]
        (DeliveryPolicy(retry_schedule=(1,) * 21), "delivery.retrySchedule"),
        (DeliveryPolicy(retry_schedule=(0, 10, 86401)), "delivery.retrySchedule[2]"),
        (DeliveryPolicy(retry_schedule=(0, -1)), "delivery.retrySchedule[1]"),
        (
            DeliveryPolicy(suspend_after_consecutive_failures=0),
            "delivery.suspendAfterConsecutiveFailures",
        ),
        (
            DeliveryPolicy(suspend_after_consecutive_failures=1001),
            "delivery.suspendAfterConsecutiveFailures",
        ),
        (
            DeliveryPolicy(suspend_after_consecutive_failures=2.5),
            "delivery.suspendAfterConsecutiveFailures",
        ),  # type: ignore[arg-type]
        (DeliveryPolicy(rate_limit_per_second=0.05), "delivery.rateLimitPerSecond"),
        (DeliveryPolicy(rate_limit_per_second=10001), "delivery.rateLimitPerSecond"),
        (DeliveryPolicy(ordering="random"), "delivery.ordering"),  # type: ignore[arg-type]
    ],
)
def test_out_of_range_delivery_values_name_their_field(delivery, field):
    assert list(fields(RegistrationPolicy(delivery=delivery))) == [field]


def test_the_range_ends_are_allowed():
    for delivery in (
        DeliveryPolicy(
            timeout_seconds=1,
            retry_schedule=(),
            suspend_after_consecutive_failures=1,
            rate_limit_per_second=0.1,
        ),
        DeliveryPolicy(
            timeout_seconds=30,
            retry_schedule=(0,) * 19 + (86400,),
            suspend_after_consecutive_failures=1000,
            rate_limit_per_second=10000,
        ),
    ):
        assert policy_errors(RegistrationPolicy(delivery=delivery)) == []


def test_hmac_only_fields_are_refused_with_other_schemes():
    for scheme in (None, SignatureScheme.STANDARD_WEBHOOKS, SignatureScheme.NONE):
        policy = RegistrationPolicy(
            signature=SignaturePolicy(
                scheme=scheme, header="X-Sig", prefix="", timestamp_header="T"
            )
        )
        assert set(fields(policy)) == {
            "signature.header",
            "signature.prefix",
            "signature.timestampHeader",
        }


@pytest.mark.parametrize(
    ("signature", "field"),
    [
        (SignaturePolicy(scheme="sha1"), "signature.scheme"),  # type: ignore[arg-type]
        (SignaturePolicy(scheme=HMAC, header="Bad Header"), "signature.header"),
        (SignaturePolicy(scheme=HMAC, header="X" * 65), "signature.header"),
        (SignaturePolicy(scheme=HMAC, header="Content-Type"), "signature.header"),
        (SignaturePolicy(scheme=HMAC, header="webhook-signature"), "signature.header"),
        (
            SignaturePolicy(scheme=HMAC, timestamp_header="Authorization"),
            "signature.timestampHeader",
        ),
        (
            SignaturePolicy(scheme=HMAC, timestamp_header="x-webhook-signature"),
            "signature.timestampHeader",
        ),
        (SignaturePolicy(scheme=HMAC, prefix="sha256=\r\n"), "signature.prefix"),
        (SignaturePolicy(scheme=HMAC, prefix="p" * 65), "signature.prefix"),
    ],
)
def test_bad_signature_settings_name_their_field(signature, field):
    assert list(fields(RegistrationPolicy(signature=signature))) == [field]


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "content-type",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "User-Agent",
        "AUTHORIZATION",
        "Cookie",
        "webhook-id",
        "Webhook-Anything",
    ],
)
def test_reserved_header_names_are_refused(name):
    assert list(fields(RegistrationPolicy(headers=((name, "x"),)))) == [f"headers.{name}"]


def test_the_registrations_own_signature_and_timestamp_headers_are_refused():
    signature = SignaturePolicy(scheme=HMAC, timestamp_header="Request-Timestamp")
    policy = RegistrationPolicy(
        signature=signature,
        headers=(("x-webhook-signature", "forged"), ("Request-Timestamp", "1"), ("X-Ok", "1")),
    )
    assert list(fields(policy)) == ["headers.x-webhook-signature", "headers.Request-Timestamp"]
    # The same names are ordinary headers for a Standard Webhooks registration.
    assert policy_errors(RegistrationPolicy(headers=policy.headers)) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Split", "a\r\nX-Injected: 1"),
        ("X-Lf", "a\nb"),
        ("X-Tab", "a\tb"),
        ("X-Empty", ""),
        ("X-Long", "v" * 1025),
        ("X-Unicode", "café"),
        ("Bad Name", "v"),
        ("", "v"),
        ("N" * 65, "v"),
    ],
)
def test_bad_header_names_and_values_are_refused(name, value):
    assert list(fields(RegistrationPolicy(headers=((name, value),)))) == [f"headers.{name}"]


def test_duplicate_names_and_too_many_headers_are_refused():
    dup = RegistrationPolicy(headers=(("X-A", "1"), ("x-a", "2")))
    assert list(fields(dup)) == ["headers.x-a"]
    many = RegistrationPolicy(headers=tuple((f"X-H{i}", "v") for i in range(MAX_HEADERS + 1)))
    assert list(fields(many)) == ["headers"]
    just = RegistrationPolicy(headers=tuple((f"X-H{i}", "v" * 1024) for i in range(MAX_HEADERS)))
    assert policy_errors(just) == []


def test_every_error_is_reported_at_once():
    policy = RegistrationPolicy(
        delivery=DeliveryPolicy(timeout_seconds=0, retry_schedule=(1, 99999)),
        signature=SignaturePolicy(scheme=HMAC, header="Host"),
        headers=(("Cookie", "a=b"),),
    )
    assert set(fields(policy)) == {
        "delivery.timeoutSeconds",
        "delivery.retrySchedule[1]",
        "signature.header",
        "headers.Cookie",
    }
