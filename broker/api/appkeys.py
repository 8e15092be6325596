"""Typed keys for what the aiohttp application and its requests carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from broker.api.group_commit import IngestBatcher
from broker.config import Settings
from broker.domain.models import Principal
from broker.store.store import Store

if TYPE_CHECKING:
    from broker.runtime import Runtime

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
ADMIN_TOKEN_HASH = web.AppKey("admin_token_hash", bytes)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
INGEST = web.AppKey("ingest", IngestBatcher)
# The process the app serves for (tests reach its workers and pool through it).
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
PRINCIPAL = web.RequestKey("principal", Principal)
