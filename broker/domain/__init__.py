"""Pure domain logic: no aiohttp, no asyncpg. The workers and the API ask it what to do."""
