"""Typed keys for what the aiohttp application and its requests carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from broker.config import Settings
from broker.domain.models import Principal

if TYPE_CHECKING:
    pass

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", "Store")
ADMIN_TOKEN_HASH = web.AppKey("admin_token_hash", bytes)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
INGEST = web.AppKey("ingest", "IngestBatcher")
PRINCIPAL = web.RequestKey("principal", Principal)
