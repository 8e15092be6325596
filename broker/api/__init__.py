"""The HTTP API: aiohttp routes, auth, problem+json and the OpenAPI document."""
