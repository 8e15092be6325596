"""The OpenAPI document: valid 3.1, complete against the contract, and precise enough to fuzz.

``openapi_spec_validator`` is used when installed; otherwise the document is checked against the
OpenAPI 3.1 meta-schema that schemathesis ships, every schema in it against the JSON Schema 2020-12
meta-schema (``jsonschema_rs``, a schemathesis dependency), and the contract's own examples against
the component schemas.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest

from broker.api.openapi import openapi_document
from broker.api.schema import SECRET_PATTERN

VERSION = "9.8.7"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
REG = "/webhooks/v1/registrations"

CONTRACT_PATHS: dict[str, set[str]] = {
    "/admin/v1/partners": {"post", "get"},
    "/admin/v1/partners/{id}/keys": {"post"},
    "/admin/v1/keys/{keyId}": {"delete"},
    "/admin/v1/producer-keys": {"post"},
    "/admin/v1/event-types": {"get"},
    "/admin/v1/event-types/{name}": {"put"},
    "/internal/v1/resource-events": {"post"},
    REG: {"post", "get"},
    REG + "/{id}": {"get", "patch", "delete"},
    REG + "/{id}/restart": {"post"},
    REG + "/{id}/pause": {"post"},
    REG + "/{id}/unpause": {"post"},
    REG + "/{id}/rotate-secret": {"post"},
    REG + "/{id}/test": {"post"},
    REG + "/{id}/stats": {"get"},
    REG + "/{id}/replay": {"post"},
    "/webhooks/v1/events": {"get"},
    "/webhooks/v1/events/{id}": {"get"},
    "/webhooks/v1/events/{id}/attempts": {"get"},
    "/webhooks/v1/events/{id}/resend": {"post"},
    "/webhooks/v1/event-types": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
    "/admin/v1/partners/{id}/portal-links": {"post", "delete"},
    "/webhooks/v1/session": {"get"},
}
PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
SCHEME_FOR_PREFIX = {
    "/admin/v1/": "adminToken",
    "/internal/v1/": "producerKey",
    "/webhooks/v1/": "partnerKey",
}
SUCCESS = {
    ("post", "/admin/v1/partners"): "201",
    ("post", "/admin/v1/partners/{id}/keys"): "201",
    ("delete", "/admin/v1/keys/{keyId}"): "204",
    ("post", "/admin/v1/producer-keys"): "201",
    ("post", "/internal/v1/resource-events"): "202",
    ("post", REG): "201",
    ("delete", REG + "/{id}"): "204",
    ("post", "/webhooks/v1/events/{id}/resend"): "202",
    ("post", REG + "/{id}/replay"): "202",
    ("post", "/admin/v1/partners/{id}/portal-links"): "201",
    ("delete", "/admin/v1/partners/{id}/portal-links"): "204",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document(VERSION)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), pointer
        node = doc
        for part in pointer[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}/{i}")


def validator(doc: dict[str, Any], name: str) -> Any:
    """A Draft 2020-12 validator for one component schema, its $refs resolved in ``doc``."""
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{name}",
        "components": doc["components"],
    }
    return jsonschema_rs.validator_for(root, validate_formats=True)


# --------------------------------------------------------------------------- shape


def test_top_level(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "broker"
    assert doc["info"]["version"] == VERSION
    description = doc["info"]["description"]
    for needle in ("Bearer", "RFC 9457", "problem+json", "window"):
        assert needle in description
    assert set(doc["components"]["securitySchemes"]) == {"adminToken", "producerKey", "partnerKey"}
    for scheme in doc["components"]["securitySchemes"].values():
        assert scheme["type"] == "http"
        assert scheme["scheme"] == "bearer"


def test_json_serializable_and_fresh() -> None:
    first = openapi_document(VERSION)
    text = json.dumps(first, allow_nan=False)
    assert json.loads(text) == first
    pristine = copy.deepcopy(first)
    first["components"]["schemas"]["Event"]["properties"].clear()
    first["paths"].clear()
    assert openapi_document(VERSION) == pristine


def test_every_contract_path_and_method(doc: dict[str, Any]) -> None:
    actual = {path: {m for m in item if m in METHODS} for path, item in doc["paths"].items()}
    assert actual == CONTRACT_PATHS
    assert "/admin/v1/partners/{id}/keys" in doc["paths"]
    assert "get" not in doc["paths"]["/admin/v1/partners/{id}/keys"]


def test_every_operation_is_named_and_tagged(doc: dict[str, Any]) -> None:
    ids = []
    tags = {tag["name"] for tag in doc["tags"]}
    for path, method, op in operations(doc):
        assert op.get("operationId"), (method, path)
        assert op.get("summary"), (method, path)
        assert op.get("tags") and set(op["tags"]) <= tags, (method, path)
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_security_per_key_kind(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        if path in PUBLIC_PATHS:
            assert not op.get("security"), path
            assert "401" not in op["responses"]
            continue
        scheme = next(s for prefix, s in SCHEME_FOR_PREFIX.items() if path.startswith(prefix))
        assert op["security"] == [{scheme: []}], (method, path)
        assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_success_statuses(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        ok = sorted(code for code in op["responses"] if code.startswith("2"))
        if (method, path) == ("put", "/admin/v1/event-types/{name}"):
            assert ok == ["200", "201"]
        else:
            assert ok == [SUCCESS.get((method, path), "200")], (method, path)
        for code in ok:
            response = resolve(doc, op["responses"][code])
            assert response["description"]
            assert ("content" in response) == (code != "204"), (method, path, code)


def test_problem_responses(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        for code, response in op["responses"].items():
            if code[0] not in "45":
                continue
            response = resolve(doc, response)
            assert list(response["content"]) == ["application/problem+json"], (method, path)
            ref = response["content"]["application/problem+json"]["schema"]["$ref"]
            expected = "ValidationProblem" if code == "400" else "Problem"
            assert ref == f"#/components/schemas/{expected}", (method, path, code)


def test_statuses_follow_the_inputs(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        codes = set(op["responses"])
        where = (method, path)
        if "requestBody" in op:
            assert {"400", "413", "415"} <= codes, where
            media = op["requestBody"]["content"]
            assert list(media) == ["application/json"], where
        if op.get("parameters"):
            assert "400" in codes, where
        uuid_params = [
            p
            for p in op.get("parameters", [])
            if p["in"] == "path" and p["schema"].get("format") == "uuid"
        ]
        if uuid_params:
            assert "404" in codes, where
        if path not in {"/healthz", "/openapi.json"}:
            assert "503" in codes, where
    ops = {(m, p): op for p, m, op in operations(doc)}
    assert "429" in ops[("post", "/internal/v1/resource-events")]["responses"]
    assert set(ops[("get", "/readyz")]["responses"]) == {"200", "503"}
    for action in ("restart", "pause", "unpause"):
        assert "409" in ops[("post", f"{REG}/{{id}}/{action}")]["responses"]
    assert "409" in ops[("patch", REG + "/{id}")]["responses"]


def test_path_parameters(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
        assert set(declared) == set(re.findall(r"{(\w+)}", path)), (method, path)
        for name, param in declared.items():
            assert param["required"] is True
            if name == "name":
                assert param["schema"]["type"] == "string"
                assert "format" not in param["schema"]
            else:
                assert param["schema"] == {"type": "string", "format": "uuid"}, (method, path)


def test_events_query_and_idempotency_header(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/webhooks/v1/events"]["get"]["parameters"]}
    assert set(params) == {
        "registrationId",
        "eventName",
        "status",
        "createdAfter",
        "createdBefore",
        "limit",
        "cursor",
    }
    assert all(p["in"] == "query" and not p["required"] for p in params.values())
    assert params["registrationId"]["schema"]["format"] == "uuid"
    assert params["status"]["schema"]["enum"] == ["Pending", "Success", "Failed"]
    assert params["createdAfter"]["schema"]["format"] == "date-time"
    assert params["createdBefore"]["schema"]["format"] == "date-time"
    limit = params["limit"]["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == (
        "integer",
        1,
        500,
        100,
    )
    ingest = doc["paths"]["/internal/v1/resource-events"]["post"]
    (header,) = ingest["parameters"]
    assert header["name"] == "Idempotency-Key"
    assert header["in"] == "header"
    assert header["required"] is False
    assert (header["schema"]["minLength"], header["schema"]["maxLength"]) == (1, 255)
    assert "Idempotent-Replayed" in ingest["responses"]["202"]["headers"]


def test_links_target_real_operations_and_parameters(doc: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in operations(doc)}
    count = 0
    for path, method, op in operations(doc):
        for code, response in op["responses"].items():
            for name, link in resolve(doc, response).get("links", {}).items():
                where = (method, path, code, name)
                target = by_id[link["operationId"]]
                names = {f"{p['in']}.{p['name']}" for p in target.get("parameters", [])} | {
                    p["name"] for p in target.get("parameters", [])
                }
                for parameter, expression in link["parameters"].items():
                    assert parameter in names, where
                    assert expression.startswith("$response.body#/"), where
                count += 1
    assert count >= 15
    created = doc["paths"][REG]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in created.values()} >= {
        "getRegistration",
        "updateRegistration",
        "deleteRegistration",
        "testRegistration",
    }


def test_webhook_is_described(doc: dict[str, Any]) -> None:
    post = doc["webhooks"]["eventObject"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Event"}
    headers = {p["name"] for p in post["parameters"] if p["in"] == "header"}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers


# --------------------------------------------------------------------------- validity


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    for where, node in walk(doc):
        if isinstance(node, dict) and "$ref" in node:
            assert resolve(doc, node) is not None, where


def test_schemas_are_valid_json_schema_2020_12(doc: dict[str, Any]) -> None:
    schemas = dict(doc["components"]["schemas"])
    for where, node in walk({"paths": doc["paths"], "webhooks": doc["webhooks"]}):
        if isinstance(node, dict) and isinstance(node.get("schema"), dict):
            schemas[where] = node["schema"]
    assert len(schemas) > 40
    for name, schema in schemas.items():
        checked = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        try:
            jsonschema_rs.meta.validate(checked)
            # Compiling proves every pattern is a valid regex and every $ref resolves.
            jsonschema_rs.validator_for({**checked, "components": doc["components"]})
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
            pytest.fail(f"{name}: {exc}")


@pytest.mark.skipif(
    importlib.util.find_spec("openapi_spec_validator") is None,
    reason="openapi-spec-validator is not installed",
)
def test_openapi_spec_validator(doc: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(doc)


def test_schemathesis_loads_and_validates(doc: dict[str, Any]) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_dict(copy.deepcopy(doc))
    schema.validate()  # the OpenAPI 3.1 meta-schema
    labels = set()
    for result in schema.get_all_operations():
        labels.add(result.ok().label)
    expected = {f"{m.upper()} {p}" for p, methods in CONTRACT_PATHS.items() for m in methods}
    assert labels == expected


def test_schemathesis_generates_every_operation(doc: dict[str, Any]) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_dict(copy.deepcopy(doc))
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.definition.raw.get("parameters") or "requestBody" in (
            operation.definition.raw
        ):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            drawn: list[Any] = []

            @settings(
                max_examples=3,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def draw(case: Any) -> None:
                drawn.append(case)  # noqa: B023 - the closure runs before the next iteration

            draw()
            assert drawn, (operation.label, mode)


# --------------------------------------------------------------------------- precision


def test_contract_event_object_validates(doc: dict[str, Any]) -> None:
    event = {
        "id": "0190a5a8-4b1f-7c2e-9a3d-1f2e3d4c5b6a",
        "eventName": "Core.Account.Opened",
        "status": "Pending",
        "partnerId": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
        "registrationId": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        "createdAt": "2018-07-26T03:48:55.969Z",
        "lastAttemptedAt": None,
        "resources": ["core/v1/dda/accounts/2001231231", "core/v1/dda/accounts/2001231232"],
    }
    check = validator(doc, "Event")
    assert check.is_valid(event)
    assert check.is_valid({**event, "extra": 1}), "responses may grow fields"
    assert not check.is_valid({**event, "status": "Delivered"})
    assert not check.is_valid({k: v for k, v in event.items() if k != "lastAttemptedAt"})
    page = validator(doc, "EventPage")
    assert page.is_valid({"data": [event], "nextCursor": None})
    assert page.is_valid({"data": [], "nextCursor": "abc"})
    assert not page.is_valid({"data": []})


def test_problem_shapes(doc: dict[str, Any]) -> None:
    problem = {
        "type": "https://broker.dev/problems/not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "no such registration",
        "instance": "/webhooks/v1/registrations/x",
    }
    assert validator(doc, "Problem").is_valid(problem)
    assert validator(doc, "Problem").is_valid({**problem, "currentStatus": "Deleted"})
    assert not validator(doc, "Problem").is_valid({"title": "x", "status": 404})
    invalid = {
        **problem,
        "status": 400,
        "errors": [{"field": "events[3].resource", "message": "must not contain whitespace"}],
    }
    assert validator(doc, "ValidationProblem").is_valid(invalid)
    assert not validator(doc, "ValidationProblem").is_valid(problem)
    assert not validator(doc, "ValidationProblem").is_valid({**invalid, "errors": [{"x": 1}]})


def test_ingest_body(doc: dict[str, Any]) -> None:
    item = {
        "partnerId": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
        "eventName": "Core.Account.Opened",
        "resource": "core/v1/dda/accounts/2001231231",
        "occurredAt": "2026-01-01T00:00:00Z",
    }
    check = validator(doc, "ResourceEventBatch")
    assert check.is_valid({"events": [item]})
    assert check.is_valid({"events": [{k: v for k, v in item.items() if k != "occurredAt"}]})
    assert check.is_valid({"events": [{**item, "occurredAt": None}]})
    assert not check.is_valid({"events": [{**item, "occurredAt": "yesterday"}]})
    assert check.is_valid({"events": [item] * 10000})
    assert not check.is_valid({"events": [item] * 10001})
    assert not check.is_valid({"events": []})
    assert not check.is_valid({"events": [item], "extra": True})
    assert not check.is_valid({"events": [{**item, "extra": True}]})
    for resource in ("", "a b", "a\tb", "a\x7fb", "https://x/y", "//host/x", "x" * 2049):
        assert not check.is_valid({"events": [{**item, "resource": resource}]}), resource
    assert check.is_valid({"events": [{**item, "resource": "/core/v1/a:b?c=d#e"}]})
    for name in ("Core", "1Core.Account", "Core..Opened", "Core.*", "a." + "b" * 199):
        assert not check.is_valid({"events": [{**item, "eventName": name}]}), name
    small = openapi_document(VERSION, ingest_max_events=5)
    assert (
        small["components"]["schemas"]["ResourceEventBatch"]["properties"]["events"]["maxItems"]
        == 5
    )


def test_registration_bodies(doc: dict[str, Any]) -> None:
    create = validator(doc, "RegistrationCreate")
    body = {"url": "https://example.com/hooks", "eventTypes": ["Core.Account.Opened"]}
    assert create.is_valid(body)
    for patterns in (["*"], ["Core.Account.*"], ["Core.*"], ["job.transaction", "*"]):
        assert create.is_valid({**body, "eventTypes": patterns}), patterns
    for patterns in ([], ["Core"], ["Core.*.Opened"], ["**"], ["Core.Account.*x"], ["a.b"] * 101):
        assert not create.is_valid({**body, "eventTypes": patterns}), patterns
    assert not create.is_valid({"url": "https://example.com/hooks"})
    assert not create.is_valid({**body, "unknown": 1})
    assert not create.is_valid({**body, "url": "https://example.com/" + "a" * 2048})
    assert create.is_valid({**body, "description": "d" * 1024})
    assert not create.is_valid({**body, "description": "d" * 1025})
    assert create.is_valid({**body, "basicAuth": "user:pass"})
    assert not create.is_valid({**body, "basicAuth": "user:p\nass"})
    assert not create.is_valid({**body, "basicAuth": "no-colon"})

    update = validator(doc, "RegistrationUpdate")
    assert update.is_valid({})
    assert update.is_valid({"description": "new", "basicAuth": None})
    assert not update.is_valid({"secret": "whsec_x"})
    assert not update.is_valid({"status": "Active"})

    restart = validator(doc, "RestartRequest")
    assert restart.is_valid({}) and restart.is_valid({"resendFailed": True})
    assert not restart.is_valid({"resendFailed": "yes"})
    create_secret = {**body, "secret": "whsec_" + "A" * 32}
    assert create.is_valid(create_secret) and create.is_valid({**body, "secret": None})
    # hmac-sha256-hex and none take any 16-256 printable ASCII characters; the server checks
    # the secret against the registration's scheme.
    assert create.is_valid({**body, "secret": "sk_" + "A" * 32})
    assert not create.is_valid({**body, "secret": "sk_short"})
    assert not create.is_valid({**body, "secret": "sk_" + "A" * 32 + "\n"})
    policy = {
        "delivery": {"timeoutSeconds": 5, "retrySchedule": [], "ordering": "fifo"},
        "signature": {"scheme": "hmac-sha256-hex", "header": "X-Aerostic-Signature"},
        "headers": {"X-Tenant": "acme"},
    }
    assert create.is_valid({**body, **policy})
    assert create.is_valid({**body, "delivery": None, "signature": None, "headers": None})
    assert not create.is_valid({**body, "delivery": {"timeoutSeconds": 31}})
    assert not create.is_valid({**body, "delivery": {"retrySchedule": [86401]}})
    assert not create.is_valid({**body, "delivery": {"ordering": "lifo"}})
    assert not create.is_valid({**body, "signature": {"scheme": "md5"}})
    assert not create.is_valid({**body, "headers": {"X-A": "a\r\nb"}})
    assert update.is_valid({"headers": {"X-Tenant": None}, "delivery": {"timeoutSeconds": None}})

    pause = validator(doc, "PauseRequest")
    assert pause.is_valid({}) and pause.is_valid({"reason": "maintenance"})
    assert not pause.is_valid({"why": "x"})
    empty = validator(doc, "EmptyRequest")
    assert empty.is_valid({}) and not empty.is_valid({"x": 1}) and not empty.is_valid([])

    rotate = validator(doc, "RotateSecretRequest")
    assert rotate.is_valid({}) and rotate.is_valid({"secret": None})
    assert rotate.is_valid({"graceSeconds": 0}) and rotate.is_valid({"graceSeconds": 604800})
    assert not rotate.is_valid({"graceSeconds": 604801})
    assert not rotate.is_valid({"graceSeconds": 1.5})
    assert not rotate.is_valid({"graceSeconds": -1})
    props = doc["components"]["schemas"]["RotateSecretRequest"]["properties"]
    assert props["graceSeconds"]["default"] == 86400


def test_optional_bodies(doc: dict[str, Any]) -> None:
    expected = {
        "restart": "RestartRequest",
        "pause": "PauseRequest",
        "unpause": "EmptyRequest",
        "rotate-secret": "RotateSecretRequest",
        "test": "EmptyRequest",
    }
    for action, name in expected.items():
        body = doc["paths"][f"{REG}/{{id}}/{action}"]["post"]["requestBody"]
        assert body["required"] is False, action
        schema = body["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}, action
        assert doc["components"]["schemas"][name]["additionalProperties"] is False
    for path, method, op in operations(doc):
        if "requestBody" in op and op["requestBody"]["required"]:
            schema = resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
            assert schema["additionalProperties"] is False, (method, path)


def test_generated_secrets_match_the_pattern() -> None:
    from broker.domain.signing import generate_secret

    for size in (24, 25, 26, 32, 63, 64):
        assert re.match(SECRET_PATTERN, generate_secret(size)), size
    assert not re.match(SECRET_PATTERN, "whsec_" + "A" * 28)


def test_admin_bodies(doc: dict[str, Any]) -> None:
    for name in ("PartnerCreate", "ProducerKeyCreate"):
        check = validator(doc, name)
        assert check.is_valid({"name": "Acme"})
        assert check.is_valid({"name": "n" * 200})
        for bad in ({}, {"name": ""}, {"name": "   "}, {"name": "n" * 201}, {"name": "a\x00"}):
            assert not check.is_valid(bad), (name, bad)
        assert not check.is_valid({"name": "Acme", "extra": 1})
    upsert = validator(doc, "EventTypeUpsert")
    assert upsert.is_valid({}) and upsert.is_valid({"description": "x" * 1024})
    assert not upsert.is_valid({"description": "x" * 1025})
    assert not upsert.is_valid({"description": "x", "name": "A.B"})


def test_response_schemas(doc: dict[str, Any]) -> None:
    stamp = "2026-01-01T00:00:00.000Z"
    reg = {
        "id": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        "url": "https://example.com/hooks",
        "eventTypes": ["Core.Account.*"],
        "description": "",
        "status": "Active",
        "failureCount": 0,
        "lastSuccessAt": None,
        "lastFailureAt": stamp,
        "createdAt": stamp,
        "updatedAt": stamp,
        "breaker": {"state": "closed", "openedAt": None, "nextProbeAt": None},
        "delivery": {
            "timeoutSeconds": None,
            "retrySchedule": None,
            "suspendAfterConsecutiveFailures": None,
            "rateLimitPerSecond": None,
            "ordering": None,
        },
        "signature": {"scheme": None, "header": None, "prefix": None, "timestampHeader": None},
        "headers": {},
    }
    assert validator(doc, "Registration").is_valid(reg)
    assert not validator(doc, "Registration").is_valid({**reg, "headers": {"X-A": 1}})
    assert not validator(doc, "Registration").is_valid({**reg, "status": "Gone"})
    assert not validator(doc, "Registration").is_valid(
        {**reg, "breaker": {"state": "tripped", "openedAt": None, "nextProbeAt": None}}
    )
    assert not validator(doc, "RegistrationCreated").is_valid(reg)
    assert validator(doc, "RegistrationCreated").is_valid({**reg, "secret": "whsec_abc"})
    attempt = {
        "attemptNumber": 1,
        "attemptedAt": stamp,
        "durationMs": 12,
        "responseStatus": None,
        "error": "timeout",
        "responseBody": None,
    }
    assert validator(doc, "AttemptList").is_valid({"data": [attempt]})
    assert validator(doc, "TestResult").is_valid({"success": False, "attempt": attempt})
    assert validator(doc, "TestResult").is_valid(
        {"success": True, "eventId": reg["id"], "attempt": {**attempt, "responseStatus": 204}}
    )
    assert not validator(doc, "TestResult").is_valid({"success": True})
    assert validator(doc, "IngestAccepted").is_valid({"accepted": 3})
    assert validator(doc, "Health").is_valid({"status": "ok"})
    assert validator(doc, "RotateResult").is_valid({"secret": "whsec_abc"})
    partner = {"id": reg["id"], "name": "Acme", "createdAt": stamp}
    assert validator(doc, "PartnerList").is_valid({"data": [partner], "nextCursor": None})
    assert validator(doc, "PartnerCreated").is_valid({**partner, "apiKey": "k"})
    assert not validator(doc, "PartnerCreated").is_valid(partner)
    key = {"id": reg["id"], "apiKey": "k", "createdAt": stamp}
    assert validator(doc, "Key").is_valid(key)
    assert validator(doc, "ProducerKey").is_valid({**key, "name": "core-ledger"})
    event_type = {"name": "test.event", "description": "", "createdAt": stamp, "updatedAt": stamp}
    assert validator(doc, "EventTypeList").is_valid({"data": [event_type]})


P = "0b6f1c4e-1d5b-4b8e-9c61-3a1f4d2f9e01"
SAMPLES: dict[str, list[Any]] = {
    "PartnerCreate": [{"name": "Acme"}, {"name": "  "}, {"name": "a\x00b"}, {"name": "x" * 201}],
    "EventTypeUpsert": [{}, {"description": "x"}, {"description": 5}, {"description": "\x00"}],
    "RegistrationCreate": [
        {"url": "https://example.com/h", "eventTypes": ["Core.Account.*"]},
        # the base64 form of user:password, which the document once refused
        {"url": "https://example.com/h", "eventTypes": ["*"], "basicAuth": "dXNlcjpwYXNz"},
        {"url": "https://example.com/h", "eventTypes": ["*"], "basicAuth": "user:pass"},
        {"url": "https://example.com/h", "eventTypes": ["*"], "basicAuth": "nocolon!"},
        {"url": "https://example.com/h", "eventTypes": ["Core.Account.Opened\n"]},
        {"url": "https://example.com/h", "eventTypes": ["Core.*.Opened"]},
        {"url": "https://example.com/h", "eventTypes": []},
        {"url": "https://example.com/h", "eventTypes": ["*"], "secret": "whsec_" + "A" * 32},
        {"url": "https://example.com/h", "eventTypes": ["*"], "secret": "whsec_short"},
        {"url": "x" * 2049, "eventTypes": ["*"]},
        {"eventTypes": ["*"]},
    ],
    "RotateSecretRequest": [
        {},
        {"graceSeconds": 604800},
        {"graceSeconds": 604801},
        {"graceSeconds": -1},
        {"graceSeconds": True},
    ],
    "ResourceEventBatch": [
        {"events": [{"partnerId": P, "eventName": "Core.A.B", "resource": r}]}
        for r in ("a/1", "/a", "1a:b", "a:b", "//h/x", "http://h", "a b", "a\u2028b", "", "a\n")
    ]
    + [
        {"events": [{"partnerId": P, "eventName": n, "resource": "a"}]}
        for n in ("Core.A.B", "Core.A.B\n", "Core", "Core.A.x" * 200)
    ]
    + [
        {"events": [{"partnerId": P, "eventName": "Core.A.B", "resource": "a", "occurredAt": t}]}
        for t in ("2026-01-01T00:00:00Z", None)
    ]
    + [{"events": []}, {"events": [{"partnerId": "nope", "eventName": "A.B", "resource": "a"}]}],
}


def test_document_and_server_agree_on_samples(doc: dict[str, Any]) -> None:
    """For each sample body, the generated component accepts it exactly when the server's model
    does: limits, patterns and enums are declared once, so they cannot drift apart."""
    from broker.api import schema

    for name, bodies in SAMPLES.items():
        model = getattr(schema, name)
        check = validator(doc, name)
        for body in bodies:
            try:
                model.model_validate_json(json.dumps(body))
                server = True
            except Exception:
                server = False
            assert check.is_valid(body) == server, (name, body, server)
