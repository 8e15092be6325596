"""Partner API: a registration's delivery stats (GET /webhooks/v1/registrations/{id}/stats)."""

from __future__ import annotations

from aiohttp import web

from broker.api.appkeys import STORE
from broker.api.auth import partner_id_of
from broker.api.paging import query_errors
from broker.api.problems import invalid, not_found
from broker.api.schema import STATS_PERIODS, RegistrationStats
from broker.api.serialize import json_response
from broker.domain.errors import FieldError
from broker.domain.ids import parse_uuid
from broker.store.stats import PERIODS

routes = web.RouteTableDef()

_QUERY_PARAMS = frozenset({"period"})
DEFAULT_PERIOD = "24h"


@routes.get("/webhooks/v1/registrations/{id}/stats")
async def registration_stats(request: web.Request) -> web.Response:
    # Unknown ids first: another partner's registration is 404 whatever the query says.
    reg_id = parse_uuid(request.match_info["id"])
    if reg_id is None:
        raise not_found("registration")
    errors = query_errors(request.query, _QUERY_PARAMS)
    name = request.query.get("period", DEFAULT_PERIOD)
    if name not in PERIODS:
        errors.append(
            FieldError(field="period", message=f"must be one of {', '.join(STATS_PERIODS)}")
        )
    if errors:
        raise invalid(errors)
    stats = await request.app[STORE].registration_stats(
        reg_id, partner_id_of(request), PERIODS[name]
    )
    if stats is None:
        raise not_found("registration")
    total = stats.success + stats.failure
    body = {
        "period": stats.period,
        "attempts": {"success": stats.success, "failure": stats.failure},
        "success_rate": stats.success / total if total else None,
        "latency_ms": (
            {"p50": stats.p50_ms, "p95": stats.p95_ms, "p99": stats.p99_ms} if total else None
        ),
        "queue": {"pending": stats.pending, "oldest_pending_at": stats.oldest_pending_at},
        "series": stats.series,
    }
    return json_response(RegistrationStats.model_validate(body))
