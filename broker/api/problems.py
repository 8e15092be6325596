"""RFC 9457 problem+json for every error the API returns.

Handlers raise :class:`Problem` (or a domain error); the middleware turns it, aiohttp's own HTTP
errors (404 route, 405, 413) and anything unexpected into ``application/problem+json``. An
unexpected exception is logged with a reference id and answered as a 500 that says nothing
internal; a database that cannot be reached, or a pool with no connection free within
``BROKER_DB_ACQUIRE_TIMEOUT_SECONDS``, is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from broker.domain.errors import DomainError, FieldError, ValidationFailed
from broker.domain.states import TransitionRefused
from broker.store.db import PoolExhausted

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://broker.dev/problems/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        slug: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.slug = slug or title.lower().replace(" ", "-")
        self.extra = extra or {}


def problem_response(problem: Problem, request: web.Request | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if request is not None:
        body["instance"] = request.path
    if problem.errors is not None:
        body["errors"] = [{"field": e.field, "message": e.message} for e in problem.errors]
    body.update(problem.extra)
    return web.Response(
        status=problem.status,
        body=orjson.dumps(body),
        content_type=PROBLEM_TYPE,
        headers=problem.headers,
    )


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="broker"'}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "Forbidden", detail)


def not_found(what: str = "resource") -> Problem:
    return Problem(404, "Not Found", f"no such {what}")


def too_many_requests(detail: str, wait_seconds: float) -> Problem:
    """429 naming the limit, with ``Retry-After`` in whole seconds (rounded up, at least 1)."""
    seconds = max(1, math.ceil(wait_seconds))
    return Problem(
        429,
        "Too Many Requests",
        detail,
        headers={"Retry-After": str(seconds)},
        slug="rate-limited",
    )


def invalid(errors: list[FieldError]) -> Problem:
    failed = ValidationFailed(errors)
    return Problem(400, failed.title, failed.detail, errors=errors, slug="validation")


_HTTP_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
}


def _from_http_exception(exc: web.HTTPException) -> Problem:
    status = exc.status
    title = _HTTP_TITLES.get(status, exc.reason)
    detail = exc.text if exc.text and not exc.text.startswith(f"{status}:") else title
    if status == 404:
        detail = "no route matches this path"
    elif status == 405:
        detail = "this method is not allowed on this path"
    elif status == 413:
        detail = "the request body is larger than this endpoint accepts"
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return Problem(status, title, detail, headers=headers)


_DB_DOWN = (
    OSError,
    asyncio.TimeoutError,
    # Connection-class errors (08xxx), e.g. ConnectionDoesNotExistError, ConnectionFailureError,
    # TransactionResolutionUnknownError: the server went away mid-request.
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # Failover: no host of a multi-host URL accepts writes yet, or this connection's server was
    # demoted to a standby. Both pass once the new primary is up; the client should retry.
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem, request)
    except ValidationFailed as exc:
        return problem_response(
            Problem(400, exc.title, exc.detail, errors=exc.errors, slug="validation"), request
        )
    except TransitionRefused as exc:
        return problem_response(
            Problem(
                409,
                "Conflict",
                f"cannot {exc.trigger.value} a registration whose status is {exc.current.value}",
                slug="invalid-transition",
                extra={"currentStatus": exc.current.value},
            ),
            request,
        )
    except DomainError as exc:
        return problem_response(Problem(exc.status, exc.title, exc.detail), request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(_from_http_exception(exc), request)
    except PoolExhausted as exc:
        # Overload, not an outage: every pooled connection stayed busy. Answer at once instead
        # of queueing the request behind the others; the client retries after Retry-After.
        log.warning("database pool exhausted on %s %s: %s", request.method, request.path, exc)
        return problem_response(
            Problem(
                503,
                "Service Unavailable",
                "the broker is busy (no database connection free); retry shortly",
                headers={"Retry-After": "1"},
                slug="overloaded",
            ),
            request,
        )
    except _DB_DOWN as exc:
        log.warning("database unavailable on %s %s: %r", request.method, request.path, exc)
        return problem_response(
            Problem(
                503,
                "Service Unavailable",
                "the database is unreachable; retry shortly",
                headers={"Retry-After": "2"},
            ),
            request,
        )
    except Exception:
        reference = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", reference, request.method, request.path)
        return problem_response(
            Problem(500, "Internal Server Error", f"unexpected error, reference {reference}"),
            request,
        )
