"""The aiohttp application: routes, middlewares and typed app state over a running runtime.

It serves HTTP and nothing else. Every lifetime (pool, session, ingest group commit, workers)
belongs to the composition root, ``broker/runtime.py``, which builds the process for its role
and hands this module what the routes need.
"""

from __future__ import annotations

from aiohttp import web

from broker.api import (
    routes_admin,
    routes_events,
    routes_ingest,
    routes_portal,
    routes_registrations,
    routes_service,
    routes_stats,
)
from broker.api.appkeys import (
    ADMIN_TOKEN_HASH,
    HTTP_SESSION,
    INGEST,
    RUNTIME,
    SETTINGS,
    STORE,
)
from broker.api.auth import auth_middleware
from broker.api.problems import problem_middleware
from broker.runtime import Runtime

# The HTTP parser's limits. A request line or header longer than these is refused by aiohttp
# itself, with a text/plain 400, before any handler or the problem+json middleware runs; its
# default of 8190 bytes is short for a history query with several long filters (a fuzzed one
# reached it). Past these, a client still gets that plain 400.
SERVER_LIMITS = {"max_line_size": 65536, "max_field_size": 16384}


def make_runner(runtime: Runtime, **kwargs: object) -> web.AppRunner:
    """The runner every server of ``create_app`` goes through (so it has SERVER_LIMITS)."""
    return web.AppRunner(create_app(runtime), **SERVER_LIMITS, **kwargs)  # type: ignore[arg-type]


def create_app(runtime: Runtime) -> web.Application:
    """The HTTP side of ``runtime``: every route for api/all, the service routes for worker."""
    settings = runtime.settings
    # A worker serves no authenticated route: without the auth middleware its API paths are
    # plain 404s, not 401/403s that would suggest the API lives there.
    middlewares = (
        [problem_middleware, auth_middleware] if runtime.serves_api else [problem_middleware]
    )
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.ingest_max_body_bytes,
    )
    app[RUNTIME] = runtime
    app[SETTINGS] = settings
    app[STORE] = runtime.store
    app[HTTP_SESSION] = runtime.session
    app[ADMIN_TOKEN_HASH] = runtime.admin_token_hash
    app[routes_service.OPENAPI_BODY] = routes_service.openapi_body(settings)
    if runtime.serves_api:
        assert runtime.ingest is not None
        app[INGEST] = runtime.ingest
        for module in (
            routes_admin,
            routes_ingest,
            routes_registrations,
            routes_events,
            routes_portal,
            routes_stats,
        ):
            app.add_routes(module.routes)
    app.add_routes(routes_service.routes)
    return app
