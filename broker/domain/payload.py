"""The body POSTed to a callback URL: the event object, always with status Pending."""

from __future__ import annotations

import uuid
from datetime import datetime

import orjson

from broker.domain.ids import format_time


def event_body(
    *,
    event_id: uuid.UUID,
    event_name: str,
    partner_id: uuid.UUID,
    registration_id: uuid.UUID,
    created_at: datetime,
    previous_attempted_at: datetime | None,
    resources: list[str],
) -> bytes:
    # Key order follows the contract's example so partners reading raw bodies see the familiar
    # shape; the signature covers these exact bytes.
    return orjson.dumps(
        {
            "id": str(event_id),
            "eventName": event_name,
            "status": "Pending",
            "partnerId": str(partner_id),
            "registrationId": str(registration_id),
            "createdAt": format_time(created_at),
            "lastAttemptedAt": format_time(previous_attempted_at),
            "resources": resources,
        }
    )
