"""From the policy fields of a registration create or PATCH (``broker.api.schema``) to the stored
policy (``broker.domain.policy``), with merge-patch meaning: a field left out is kept, ``null``
is the global default. The result is judged whole (reserved headers, scheme-only fields, the
secret the scheme signs with), so a PATCH is refused for the policy it would leave behind.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from broker.domain import policy as P
from broker.domain.errors import FieldError
from broker.domain.signatures import secret_problem


def _changes(model: BaseModel | None) -> dict[str, Any]:
    """The fields the request named (attribute names are the domain's), values converted."""
    if model is None:
        return {}
    out: dict[str, Any] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if value is not None:
            if name == "retry_schedule":
                value = tuple(float(v) for v in value)
            elif name == "ordering":
                value = P.Ordering(value)
            elif name == "scheme":
                value = P.SignatureScheme(value)
            elif name in ("timeout_seconds", "rate_limit_per_second"):
                value = float(value)
        out[name] = value
    return out


def names_policy(body: BaseModel) -> bool:
    return bool({"delivery", "signature", "headers"} & body.model_fields_set)


def merged_policy(
    body: Any, current: P.RegistrationPolicy, errors: list[FieldError]
) -> P.RegistrationPolicy | None:
    """The policy after ``body`` (a RegistrationCreate or RegistrationUpdate), or None with the
    reasons appended to ``errors``."""
    sent = body.model_fields_set
    new = P.patched(
        current,
        delivery=_changes(body.delivery),
        reset_delivery="delivery" in sent and body.delivery is None,
        signature=_changes(body.signature),
        reset_signature="signature" in sent and body.signature is None,
        headers=body.headers,
        reset_headers="headers" in sent and body.headers is None,
    )
    problems = P.policy_errors(new)
    if problems:
        errors.extend(problems)
        return None
    return new


def check_secret(
    policy: P.RegistrationPolicy, secret: str, field: str, errors: list[FieldError]
) -> bool:
    """Can the policy's scheme sign with ``secret``? If not, why, under ``field``."""
    scheme = policy.signature.scheme or P.DEFAULT_SCHEME
    why = secret_problem(scheme, secret)
    if why is None:
        return True
    if field == "secret":
        message = f"{why} (signature scheme {scheme.value})"
    else:
        message = (
            f"the registration's secret cannot sign with {scheme.value} ({why}); "
            "rotate to a suitable secret first"
        )
    errors.append(FieldError(field=field, message=message))
    return False
