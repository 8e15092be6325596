"""docs/api.md against the served document: every path and field it names for a built part exists.

Sections whose heading says "(planned)" describe behaviour not served yet and are skipped; when
one is built, drop the mark and this test holds the page to the document. The README and docs/
must not point outside the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from broker.api.openapi import openapi_document
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "api.md"
OPERATION = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[A-Za-z0-9_{}/.-]*[A-Za-z0-9_}/])")
CODE = re.compile(r"`([^`\n]+)`")
FIELD = re.compile(r"[a-z][A-Za-z0-9]*")
JSON_KEY = re.compile(r'"([A-Za-z][A-Za-z0-9]*)"\s*:')
LITERALS = {"null", "true", "false"}


def sections(text: str) -> Iterator[tuple[str, str]]:
    heading, lines = "", []
    for line in text.splitlines():
        if line.startswith("#"):
            yield heading, "\n".join(lines)
            heading, lines = line, []
        else:
            lines.append(line)
    yield heading, "\n".join(lines)


def built(text: str) -> str:
    return "\n".join(body for heading, body in sections(text) if "(planned)" not in heading)


def names_in(node: Any, out: set[str]) -> set[str]:
    """Every property, parameter, header and enum value the document mentions."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out.update(value)
            elif key == "enum" and isinstance(value, list):
                out.update(v for v in value if isinstance(v, str))
            elif key == "parameters" and isinstance(value, list):
                out.update(p["name"] for p in value if "name" in p)
            names_in(value, out)
    elif isinstance(node, list):
        for value in node:
            names_in(value, out)
    return out


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document("0")


def test_every_operation_named_exists(doc: dict[str, Any]) -> None:
    text = built(PAGE.read_text())
    named = {(m.lower(), p) for m, p in OPERATION.findall(text)}
    assert len(named) >= 20, "the page names the API's operations"
    missing = {(m, p) for m, p in named if m not in doc["paths"].get(p, {})}
    assert not missing, f"named in docs/api.md but not in /openapi.json: {sorted(missing)}"


def test_every_documented_operation_is_on_the_page(doc: dict[str, Any]) -> None:
    named = {(m.lower(), p) for m, p in OPERATION.findall(PAGE.read_text())}
    served = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert served - named == set(), "served but docs/api.md does not say so"


def test_every_field_named_exists(doc: dict[str, Any]) -> None:
    text = built(PAGE.read_text())
    known = names_in(doc, set()) | LITERALS
    fields = {c for c in CODE.findall(text) if FIELD.fullmatch(c)} | set(JSON_KEY.findall(text))
    assert len(fields) >= 30, "the page names the API's fields"
    missing = fields - known
    assert not missing, f"named in docs/api.md but not in /openapi.json: {sorted(missing)}"


def test_planned_sections_name_nothing_that_is_served_as_built(doc: dict[str, Any]) -> None:
    """A planned section whose operations all exist should lose its mark."""
    for heading, body in sections(PAGE.read_text()):
        if "(planned)" not in heading:
            continue
        ops = {(m.lower(), p) for m, p in OPERATION.findall(body)}
        if ops:
            assert not all(m in doc["paths"].get(p, {}) for m, p in ops), heading


def test_readme_and_docs_stay_inside_the_repository() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for needle in ("../shared", "shared/", "/work/"):
            assert needle not in text, f"{page.name} points outside the repository ({needle})"
