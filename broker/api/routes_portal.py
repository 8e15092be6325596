"""The partner portal: its pages (with their security headers) and the links that sign in.

The pages are static files served with a Content-Security-Policy that allows no inline script
and no foreign origin, and whose ``frame-ancestors`` is ``BROKER_PORTAL_FRAME_ANCESTORS``
(default ``'none'``: no platform may frame it unless the operator says so).

Portal links: an operator's platform signs its partner into the portal for a while.

``POST /admin/v1/partners/{id}/portal-links`` makes a random token (stored as its SHA-256, like
every key), good as that partner's bearer credential on ``/webhooks/v1/*`` until it expires, and
answers the URL that opens the portal signed in (the token rides in the fragment, which browsers
never send to a server or put in a Referer). ``DELETE`` on the same path revokes every link of
the partner at once. ``GET /webhooks/v1/session`` tells the portal what its credential may do.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from broker.api.appkeys import PRINCIPAL, SETTINGS, STORE
from broker.api.auth import partner_id_of
from broker.api.problems import not_found
from broker.api.schema import PortalLink, PortalLinkCreate, PortalSession, adapter
from broker.api.serialize import json_response
from broker.api.validation import read_model
from broker.domain.ids import parse_uuid
from broker.store.records import new_api_key

routes = web.RouteTableDef()
PORTAL_DIR = Path(__file__).parent / "portal"

_PORTAL_LINK_CREATE = adapter(PortalLinkCreate)


def _base_url(request: web.Request) -> str:
    configured = request.app[SETTINGS].public_url
    return configured.rstrip("/") if configured else str(request.url.origin())


@routes.post("/admin/v1/partners/{id}/portal-links")
async def create_portal_link(request: web.Request) -> web.Response:
    partner_id = parse_uuid(request.match_info["id"])
    # No body means the defaults (one hour, read-write); a body must be a valid object.
    body: PortalLinkCreate = await read_model(request, _PORTAL_LINK_CREATE, optional=True)
    if partner_id is None:
        raise not_found("partner")
    token = new_api_key("portal")
    expires_at = await request.app[STORE].create_portal_link(
        partner_id, token, read_only=body.read_only, ttl_seconds=body.ttl_seconds
    )
    if expires_at is None:
        raise not_found("partner")
    link = PortalLink(
        url=f"{_base_url(request)}/portal/#token={token}",
        token=token,
        expires_at=expires_at,
        read_only=body.read_only,
    )
    return json_response(link, status=201)


@routes.delete("/admin/v1/partners/{id}/portal-links")
async def revoke_portal_links(request: web.Request) -> web.Response:
    partner_id = parse_uuid(request.match_info["id"])
    store = request.app[STORE]
    if partner_id is None or partner_id in await store.unknown_partners([partner_id]):
        raise not_found("partner")
    await store.revoke_portal_links(partner_id)
    return web.Response(status=204)


@routes.get("/webhooks/v1/session")
async def session(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return json_response(
        PortalSession(
            partner_id=partner_id_of(request),
            read_only=principal.read_only,
            expires_at=principal.expires_at,
        )
    )


def portal_headers(frame_ancestors: str) -> dict[str, str]:
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'self'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _headers(request: web.Request) -> dict[str, str]:
    return portal_headers(request.app[SETTINGS].portal_frame_ancestors)


@routes.get("/portal")
async def portal_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/portal/", headers=_headers(request))


@routes.get("/portal/")
async def portal_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PORTAL_DIR / "index.html", headers=_headers(request))


@routes.get("/portal/{asset:[a-z]+\\.(?:js|css)}")
async def portal_asset(request: web.Request) -> web.FileResponse:
    path = PORTAL_DIR / request.match_info["asset"]
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers=_headers(request))
