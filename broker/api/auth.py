"""Bearer-key authentication and the key-kind rules of the contract.

The path prefix decides which kind of key a request needs: ``/admin/v1`` the admin token,
``/internal/v1`` a producer key, ``/webhooks/v1`` a partner key. Missing, unknown or revoked
keys are 401; a valid key of the wrong kind is 403. Partner and producer keys are looked up by
their SHA-256, so the plaintext is never stored and the comparison happens on a hash index; the
admin token is compared with ``hmac.compare_digest`` so its check takes the same time for every
wrong guess.

A portal link's token (``bk_portal_...``, from ``POST /admin/v1/partners/{id}/portal-links``)
acts as a partner key of its partner until it expires; a read-only one may only read, so every
other method answers 403 before any handler runs.
"""

from __future__ import annotations

import hmac
import uuid

from aiohttp import web

from broker.api.appkeys import ADMIN_TOKEN_HASH, PRINCIPAL, SETTINGS, STORE
from broker.api.problems import Handler, forbidden, unauthorized
from broker.domain.models import Principal
from broker.store.records import KEY_PREFIXES, hash_key

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PORTAL_PREFIX = KEY_PREFIXES["portal"]
ADMIN_PREFIX = KEY_PREFIXES["admin"]

REQUIRED_KIND = (
    ("/admin/v1/", "admin"),
    ("/internal/v1/", "producer"),
    ("/webhooks/v1/", "partner"),
)


def required_kind(path: str) -> str | None:
    for prefix, kind in REQUIRED_KIND:
        if path.startswith(prefix):
            return kind
    return None


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


async def identify(request: web.Request, token: str) -> Principal | None:
    if request.app[SETTINGS].admin_token is not None:
        if hmac.compare_digest(hash_key(token), request.app[ADMIN_TOKEN_HASH]):
            return Principal(kind="admin")
    elif token.startswith(ADMIN_PREFIX):
        # The database's generated token, read on every admin request (they are rare): after
        # `broker admin reset-admin-token` every process refuses the old one at once.
        stored = await request.app[STORE].admin_token_hash()
        if stored is not None and hmac.compare_digest(hash_key(token), stored):
            return Principal(kind="admin")
        return None
    if token.startswith(PORTAL_PREFIX):
        return await request.app[STORE].principal_for_portal_token(token)
    return await request.app[STORE].principal_for_key(token)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    kind = required_kind(request.path)
    if kind is None:
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise unauthorized("send Authorization: Bearer <key>")
    principal = await identify(request, token)
    if principal is None:
        raise unauthorized("the key is unknown or revoked")
    if principal.kind != kind:
        raise forbidden(f"this path needs a {kind} key, not a {principal.kind} key")
    if principal.read_only and request.method not in READ_METHODS:
        raise forbidden("this portal link is read-only: it may not change anything")
    request[PRINCIPAL] = principal
    return await handler(request)


def partner_id_of(request: web.Request) -> uuid.UUID:
    """The calling partner's id (the auth middleware guarantees a partner key here)."""
    partner_id = request[PRINCIPAL].partner_id
    assert partner_id is not None
    return partner_id
