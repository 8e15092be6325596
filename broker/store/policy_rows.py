"""A registration's delivery policy to and from its columns (sql/migrations/0007)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.policy import (
    DeliveryPolicy,
    Ordering,
    RegistrationPolicy,
    SignaturePolicy,
    SignatureScheme,
)

# The column order of policy_params, as the SQL blocks take them.
POLICY_COLUMNS = (
    "delivery_timeout_seconds",
    "retry_schedule",
    "suspend_after_consecutive_failures",
    "rate_limit_per_second",
    "delivery_ordering",
    "signature_scheme",
    "signature_header",
    "signature_prefix",
    "signature_timestamp_header",
    "extra_headers",
)


def policy_from_row(row: Mapping[str, Any]) -> RegistrationPolicy:
    schedule = row["retry_schedule"]
    ordering = row["delivery_ordering"]
    scheme = row["signature_scheme"]
    return RegistrationPolicy(
        delivery=DeliveryPolicy(
            timeout_seconds=row["delivery_timeout_seconds"],
            retry_schedule=None if schedule is None else tuple(schedule),
            suspend_after_consecutive_failures=row["suspend_after_consecutive_failures"],
            rate_limit_per_second=row["rate_limit_per_second"],
            ordering=None if ordering is None else Ordering(ordering),
        ),
        signature=SignaturePolicy(
            scheme=None if scheme is None else SignatureScheme(scheme),
            header=row["signature_header"],
            prefix=row["signature_prefix"],
            timestamp_header=row["signature_timestamp_header"],
        ),
        headers=tuple((row["extra_headers"] or {}).items()),
    )


def policy_params(policy: RegistrationPolicy) -> tuple[Any, ...]:
    d, s = policy.delivery, policy.signature
    return (
        d.timeout_seconds,
        None if d.retry_schedule is None else list(d.retry_schedule),
        d.suspend_after_consecutive_failures,
        d.rate_limit_per_second,
        None if d.ordering is None else d.ordering.value,
        None if s.scheme is None else s.scheme.value,
        s.header,
        s.prefix,
        s.timestamp_header,
        dict(policy.headers),
    )
