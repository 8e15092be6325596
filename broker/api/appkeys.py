"""Typed keys for what the aiohttp application and its requests carry."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from broker.api.group_commit import IngestBatcher
from broker.config import Settings
from broker.domain.models import Principal
from broker.store.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
ADMIN_TOKEN_HASH = web.AppKey("admin_token_hash", bytes)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
INGEST = web.AppKey("ingest", IngestBatcher)
PRINCIPAL = web.RequestKey("principal", Principal)
