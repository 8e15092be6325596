"""The named-block SQL loader, and that every query the store asks for exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.store.queries import Q, Queries, load_queries, parse_queries

ROOT = Path(__file__).resolve().parents[2]


def test_blocks_split_on_name_lines():
    text = """-- file header comment, before any block, is ignored
-- name: first_query
-- a comment inside the block stays with it
SELECT 1;

--name:second_query
SELECT 2
FROM t;
-- name: third_query
SELECT 3;
"""
    queries = parse_queries(text)
    assert list(queries) == ["first_query", "second_query", "third_query"]
    assert queries["first_query"] == "-- a comment inside the block stays with it\nSELECT 1;"
    assert queries["second_query"] == "SELECT 2\nFROM t;"
    assert queries["third_query"] == "SELECT 3;"


def test_text_without_names_gives_nothing():
    assert parse_queries("") == {}
    assert parse_queries("-- only a comment\n\n") == {}


def test_sql_outside_any_block_is_an_error():
    with pytest.raises(ValueError, match="no query"):
        parse_queries("SELECT 1;\n-- name: q\nSELECT 2;\n", origin="x.sql")
    with pytest.raises(ValueError, match="no query"):
        parse_queries("SELECT 1;", origin="x.sql")


@pytest.mark.parametrize(
    "line", ["-- name: ClaimDue", "-- name: claim-due", "-- name:", "-- Name: q"]
)
def test_malformed_name_line_is_an_error_not_a_comment(line):
    # read as a comment, it would silently glue the second query onto the first
    text = f"-- name: first\nSELECT 1;\n{line}\nSELECT 2;\n"
    with pytest.raises(ValueError, match="malformed"):
        parse_queries(text, origin="x.sql")


def test_duplicate_name_is_an_error_naming_it():
    text = "-- name: same\nSELECT 1;\n-- name: same\nSELECT 2;\n"
    with pytest.raises(ValueError, match=r"some\.sql.*same"):
        parse_queries(text, origin="some.sql")


def test_empty_block_is_an_error_naming_it():
    text = "-- name: empty\n\n   \n-- name: full\nSELECT 1;\n"
    with pytest.raises(ValueError, match="empty"):
        parse_queries(text, origin="x.sql")
    with pytest.raises(ValueError, match="last"):
        parse_queries("-- name: full\nSELECT 1;\n-- name: last\n", origin="x.sql")


def test_name_lines_must_be_whole_lines():
    # "-- name:" inside a longer line is not a block start
    text = "-- name: real\nSELECT 1; -- name: not_a_block\n"
    assert parse_queries(text) == {"real": "SELECT 1; -- name: not_a_block"}


def test_same_name_in_two_files_is_an_error(tmp_path):
    (tmp_path / "a.sql").write_text("-- name: shared\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: shared\nSELECT 2;\n")
    with pytest.raises(ValueError, match="shared"):
        load_queries(tmp_path)


def test_unknown_query_attribute_is_a_clear_error():
    queries = Queries({"known": "SELECT 1"})
    assert queries.known == "SELECT 1"
    assert queries.names() == ["known"]
    with pytest.raises(AttributeError, match="unknown"):
        _ = queries.unknown


def test_project_queries_load_and_are_nonempty():
    names = Q.names()
    assert names, "no queries loaded from sql/queries"
    for name in names:
        assert getattr(Q, name).strip()


def _used_names() -> set[str]:
    used: set[str] = set()
    for path in (ROOT / "broker").rglob("*.py"):
        if path.name == "queries.py" and path.parent.name == "store":
            continue  # the loader itself: its docstrings show example names
        used |= set(re.findall(r"\bQ\.(\w+)", path.read_text()))
    used.discard("names")
    return used


def test_every_query_the_code_uses_exists():
    store = "".join(p.read_text() for p in (ROOT / "broker" / "store").glob("*.py"))
    assert re.findall(r"\bQ\.(\w+)", store), "the store uses no named queries?"
    missing = sorted(_used_names() - set(Q.names()))
    assert missing == []


def test_every_defined_query_is_used():
    unused = sorted(set(Q.names()) - _used_names())
    assert unused == [], f"queries defined in sql/queries but never used: {unused}"
