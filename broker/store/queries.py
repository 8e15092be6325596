"""Named SQL blocks loaded from ``sql/queries/*.sql``.

Each block starts with a ``-- name: some_query`` line and runs until the next one. Keeping SQL in
``.sql`` files lets it be read, diffed and tested as SQL; the store refers to blocks by name, and a
missing or duplicated name fails at start-up rather than at the first request that needs it.
"""

from __future__ import annotations

import re
from pathlib import Path

from broker.store.db import SQL_DIR

QUERIES_DIR = SQL_DIR / "queries"
_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
# Anything that looks like a name line; one the strict pattern refuses (``-- name: ClaimDue``)
# would otherwise be read as a comment and glue two queries into one.
_NAME_LIKE = re.compile(r"^--\s*name\s*:.*$", re.MULTILINE | re.IGNORECASE)
_COMMENT_OR_BLANK = re.compile(r"\s*(--.*)?")  # used with fullmatch


def parse_queries(text: str, *, origin: str = "<string>") -> dict[str, str]:
    """Split one file's text into {name: sql}."""
    queries: dict[str, str] = {}
    for line in _NAME_LIKE.finditer(text):
        if not _NAME_LINE.fullmatch(line[0]):
            raise ValueError(f"{origin}: malformed query name line {line[0]!r} (use snake_case)")
    matches = list(_NAME_LINE.finditer(text))
    preamble = text[: matches[0].start()] if matches else text
    if not all(_COMMENT_OR_BLANK.fullmatch(line) for line in preamble.splitlines()):
        raise ValueError(f"{origin}: SQL before the first '-- name:' line belongs to no query")
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match[1]
        if not body:
            raise ValueError(f"{origin}: query {name} is empty")
        if name in queries:
            raise ValueError(f"{origin}: query {name} defined twice")
        queries[name] = body
    return queries


def load_queries(directory: Path = QUERIES_DIR) -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, sql in parse_queries(path.read_text(), origin=path.name).items():
            if name in queries:
                raise ValueError(f"{path.name}: query {name} is also defined in another file")
            queries[name] = sql
    return queries


class Queries:
    """Attribute access to the loaded blocks: ``Q.claim_due_events``."""

    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r} in sql/queries") from None

    def names(self) -> list[str]:
        return sorted(self._queries)


Q = Queries(load_queries())
