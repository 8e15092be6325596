"""The OpenAPI 3.1 document of broker's HTTP API, served at ``GET /openapi.json``.

The document is the machine-readable form of the external contract (``API.md``) and is precise on
purpose: schemathesis fuzzes the server against it and checks every response, so each operation
lists every status it can answer, request bodies are as strict as the server's own validation
(unknown fields are refused), and response schemas require what the contract promises while
leaving room for extra fields.

``components.schemas`` is generated from the models of :mod:`broker.api.schema`, the same ones
the handlers validate and serialize with; this module adds only what a model cannot say: paths,
parameters, security, links and the problem responses. Small helpers keep the rules shared by
many operations in one place (:func:`_operation`): a secured operation can answer 401 and 403,
anything with input can answer 400, anything with a body can answer 413 and 415, anything
touching the database can answer 503. Every call returns a fresh document, so a caller may
mutate its copy freely.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from broker.api.schema import (
    EVENT_NAME_MAX_LENGTH,
    EVENT_NAME_PATTERN,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    NAMED_TYPES,
    PAGE_DEFAULT,
    PAGE_MAX,
    REQUEST_MODELS,
    RESPONSE_MODELS,
    SIGNATURE_PATTERN,
    STATS_PERIODS,
)
from broker.config import Settings
from broker.domain.states import EVENT_STATUSES

Schema = dict[str, Any]
INGEST_MAX_EVENTS: int = Settings.model_fields["ingest_max_events"].default

OPENAPI_VERSION = "3.1.0"

PROBLEM_JSON = "application/problem+json"

# Security scheme names, one per key kind.
ADMIN = "adminToken"
PRODUCER = "producerKey"
PARTNER = "partnerKey"

# Status -> (components.responses name, description).
_PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("ValidationFailed", "The request is malformed or fails validation; nothing changed."),
    401: ("Unauthorized", "The bearer key is missing, unknown or revoked."),
    403: ("Forbidden", "The bearer key is valid but of the wrong kind for this path."),
    404: (
        "NotFound",
        "No such resource (or it belongs to another partner, which looks the same).",
    ),
    409: ("Conflict", "The resource's current state does not allow this request."),
    413: ("PayloadTooLarge", "The request body is larger than the server accepts."),
    415: ("UnsupportedMediaType", "The request body is not application/json."),
    422: (
        "UnprocessableContent",
        "The request is well formed but asks for more than one call may do (the detail names "
        "the count and the limit); nothing changed.",
    ),
    429: (
        "TooManyRequests",
        "A rate limit or quota is exceeded (the detail names it); retry after Retry-After when "
        "one is given.",
    ),
    503: ("ServiceUnavailable", "The database is unreachable or not migrated; retry later."),
}
_RETRY_AFTER_STATUSES = frozenset({429, 503})


# --------------------------------------------------------------------------- small helpers


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _nullable(type_name: str, **extra: Any) -> Schema:
    """A JSON Schema 2020-12 nullable: ``{"type": [type_name, "null"], ...}``."""
    return {"type": [type_name, "null"], **extra}


def _timestamp(description: str) -> Schema:
    return {"type": "string", "format": "date-time", "description": description}


def _nullable_timestamp(description: str) -> Schema:
    return _nullable("string", format="date-time", description=description)


def _object(
    properties: dict[str, Schema],
    *,
    required: list[str] | None = None,
    strict: bool = False,
    description: str | None = None,
) -> Schema:
    """An object schema; ``strict`` refuses unknown fields (request bodies), and ``required``
    defaults to every property (responses promise all their fields)."""
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = properties
    req = list(properties) if required is None else required
    if req:
        schema["required"] = req
    if strict:
        schema["additionalProperties"] = False
    return schema


def _list_of(item: str, description: str) -> Schema:
    return _object({"data": {"type": "array", "items": _ref(item)}}, description=description)


def _response(description: str, schema: Schema | None = None, **extra: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = _json(schema)
    response.update(extra)
    return response


def _links(parameter: str, expression: str, *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links feeding a runtime ``expression`` (``$response.body#/id``) into ``parameter``
    of each named operation: how a client, or a stateful fuzzer, reaches what it just created."""
    return {
        op_id[0].upper() + op_id[1:]: {"operationId": op_id, "parameters": {parameter: expression}}
        for op_id in operation_ids
    }


def _problem_responses(*codes: int) -> dict[str, Any]:
    """``{"401": {"$ref": "#/components/responses/Unauthorized"}, ...}`` in status order."""
    return {
        str(code): {"$ref": f"#/components/responses/{_PROBLEMS[code][0]}"}
        for code in sorted(set(codes))
    }


def _problem_response_components() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for code, (name, description) in sorted(_PROBLEMS.items()):
        schema = _ref("ValidationProblem" if code == 400 else "Problem")
        response: dict[str, Any] = {
            "description": description,
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        if code in _RETRY_AFTER_STATUSES:
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        components[name] = response
    return components


def _path_param(name: str, description: str, *, uuid: bool = True, **schema: Any) -> Schema:
    param_schema: Schema = {"type": "string", "format": "uuid"} if uuid else {"type": "string"}
    param_schema.update(schema)
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": param_schema,
    }


def _query_param(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _operation(
    *,
    operation_id: str,
    summary: str,
    tag: str,
    auth: str | None,
    ok: dict[str, Any],
    description: str | None = None,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
    problems: tuple[int, ...] = (),
    database: bool = True,
) -> dict[str, Any]:
    """One operation object, with the problem statuses every operation of its kind can answer."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    op["security"] = [{auth: []}] if auth else []
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": _json(body)}

    codes = set(problems)
    if auth:
        codes |= {401, 403}
    if parameters or body is not None:
        codes.add(400)
    if body is not None:
        codes |= {413, 415}
    if database:
        codes.add(503)
    op["responses"] = {**ok, **_problem_responses(*codes)}
    return op


def _page_params() -> list[Schema]:
    return [
        _query_param(
            "limit",
            "Page size.",
            {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
        ),
        _query_param("cursor", "The `nextCursor` of the previous page.", {"type": "string"}),
    ]


# --------------------------------------------------------------------------- schemas


class _Components(GenerateJsonSchema):
    """JSON Schema 2020-12 for ``components.schemas``: no generated per-field titles (noise)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _schemas(ingest_max_events: int) -> dict[str, Schema]:
    """Every component, generated from the models in :mod:`broker.api.schema`."""
    _, top = models_json_schema(
        [(m, "validation") for m in REQUEST_MODELS]
        + [(m, "serialization") for m in RESPONSE_MODELS],
        ref_template="#/components/schemas/{model}",
        schema_generator=_Components,
    )
    schemas: dict[str, Schema] = top["$defs"]
    for name, declared in NAMED_TYPES.items():
        schemas[name] = TypeAdapter(declared).json_schema(schema_generator=_Components)
    # The configured batch limit (BROKER_INGEST_MAX_EVENTS), not the model's ceiling.
    schemas["ResourceEventBatch"]["properties"]["events"]["maxItems"] = ingest_max_events
    return schemas


# --------------------------------------------------------------------------- paths


def _admin_paths() -> dict[str, Any]:
    partner_id = _path_param("id", "Partner id.")
    return {
        "/admin/v1/partners": {
            "post": _operation(
                operation_id="createPartner",
                summary="Create a partner and its first API key",
                tag="admin",
                auth=ADMIN,
                body=_ref("PartnerCreate"),
                ok={
                    "201": _response(
                        "Created; `apiKey` is shown only here.",
                        _ref("PartnerCreated"),
                        links=_links("id", "$response.body#/id", "createPartnerKey"),
                    )
                },
            ),
            "get": _operation(
                operation_id="listPartners",
                summary="List partners",
                tag="admin",
                auth=ADMIN,
                parameters=_page_params(),
                ok={"200": _response("A page of partners.", _ref("PartnerList"))},
            ),
        },
        "/admin/v1/partners/{id}/keys": {
            "post": _operation(
                operation_id="createPartnerKey",
                summary="Create another API key for a partner",
                tag="admin",
                auth=ADMIN,
                parameters=[partner_id],
                problems=(404,),
                ok={
                    "201": _response(
                        "Created; `apiKey` is shown only here.",
                        _ref("Key"),
                        links=_links("keyId", "$response.body#/id", "revokeKey"),
                    )
                },
            ),
        },
        "/admin/v1/keys/{keyId}": {
            "delete": _operation(
                operation_id="revokeKey",
                summary="Revoke a partner or producer key at once",
                tag="admin",
                auth=ADMIN,
                parameters=[_path_param("keyId", "Key id.")],
                problems=(404,),
                ok={"204": _response("Revoked.")},
            ),
        },
        "/admin/v1/producer-keys": {
            "post": _operation(
                operation_id="createProducerKey",
                summary="Create a producer key",
                tag="admin",
                auth=ADMIN,
                body=_ref("ProducerKeyCreate"),
                ok={
                    "201": _response(
                        "Created; `apiKey` is shown only here.",
                        _ref("ProducerKey"),
                        links=_links("keyId", "$response.body#/id", "revokeKey"),
                    )
                },
            ),
        },
        "/admin/v1/event-types": {
            "get": _operation(
                operation_id="adminListEventTypes",
                summary="List the event type catalog",
                tag="admin",
                auth=ADMIN,
                ok={"200": _response("The catalog.", _ref("EventTypeList"))},
            ),
        },
        "/admin/v1/event-types/{name}": {
            "put": _operation(
                operation_id="putEventType",
                summary="Create or update an event type",
                tag="admin",
                auth=ADMIN,
                parameters=[
                    _path_param(
                        "name",
                        "Event type name.",
                        uuid=False,
                        maxLength=EVENT_NAME_MAX_LENGTH,
                        pattern=EVENT_NAME_PATTERN,
                    )
                ],
                body=_ref("EventTypeUpsert"),
                ok={
                    "200": _response("Updated.", _ref("EventType")),
                    "201": _response("Created.", _ref("EventType")),
                },
            ),
        },
    }


def _producer_paths() -> dict[str, Any]:
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": (
            "The same key from the same producer key within 24 h returns the first answer again "
            "and stores nothing new."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
    }
    replayed = {
        "Idempotent-Replayed": {
            "description": "`true` when this is the stored answer to an earlier request.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }
    return {
        "/internal/v1/resource-events": {
            "post": _operation(
                operation_id="ingestResourceEvents",
                summary="Ingest a batch of resource events",
                description=(
                    "All or nothing: one invalid item answers 400 naming every bad item and "
                    "stores nothing. 202 means every item is durably committed."
                ),
                tag="producer",
                auth=PRODUCER,
                parameters=[idempotency_key],
                body=_ref("ResourceEventBatch"),
                problems=(409, 429),
                ok={
                    "202": _response(
                        "Accepted and committed.", _ref("IngestAccepted"), headers=replayed
                    )
                },
            ),
        },
    }


_REGISTRATION_OPERATIONS = (
    "getRegistration",
    "updateRegistration",
    "deleteRegistration",
    "restartRegistration",
    "pauseRegistration",
    "unpauseRegistration",
    "rotateRegistrationSecret",
    "testRegistration",
    "getRegistrationStats",
    "replayRegistration",
)
_EVENT_OPERATIONS = ("getEvent", "listEventAttempts", "resendEvent")


def _partner_paths() -> dict[str, Any]:
    reg_id = _path_param("id", "Registration id.")
    event_id = _path_param("id", "Event id.")
    base = "/webhooks/v1/registrations"

    def registration_action(
        operation_id: str,
        summary: str,
        description: str,
        body: Schema | None = None,
    ) -> dict[str, Any]:
        return {
            "post": _operation(
                operation_id=operation_id,
                summary=summary,
                description=description,
                tag="registrations",
                auth=PARTNER,
                parameters=[reg_id],
                body=body,
                body_required=False,
                problems=(404, 409),
                ok={"200": _response("The registration after the change.", _ref("Registration"))},
            )
        }

    return {
        base: {
            "post": _operation(
                operation_id="createRegistration",
                summary="Register a callback URL",
                tag="registrations",
                auth=PARTNER,
                body=_ref("RegistrationCreate"),
                description=(
                    "429 when the partner already has BROKER_MAX_REGISTRATIONS_PER_PARTNER "
                    "registrations that are not Deleted."
                ),
                problems=(429,),
                ok={
                    "201": _response(
                        "Created, Active, with its secret.",
                        _ref("RegistrationCreated"),
                        headers={
                            "Location": {
                                "description": "The new registration's path.",
                                "schema": {"type": "string"},
                            }
                        },
                        links={
                            **_links("id", "$response.body#/id", *_REGISTRATION_OPERATIONS),
                            **_links("query.registrationId", "$response.body#/id", "listEvents"),
                        },
                    )
                },
            ),
            "get": _operation(
                operation_id="listRegistrations",
                summary="List registrations (not Deleted)",
                tag="registrations",
                auth=PARTNER,
                parameters=_page_params(),
                ok={
                    "200": _response(
                        "A page of the partner's registrations.", _ref("RegistrationList")
                    )
                },
            ),
        },
        base + "/{id}": {
            "get": _operation(
                operation_id="getRegistration",
                summary="Get a registration",
                tag="registrations",
                auth=PARTNER,
                parameters=[reg_id],
                problems=(404,),
                ok={"200": _response("The registration.", _ref("Registration"))},
            ),
            "patch": _operation(
                operation_id="updateRegistration",
                summary="Update a registration",
                tag="registrations",
                auth=PARTNER,
                parameters=[reg_id],
                body=_ref("RegistrationUpdate"),
                problems=(404, 409),
                ok={"200": _response("The updated registration.", _ref("Registration"))},
            ),
            "delete": _operation(
                operation_id="deleteRegistration",
                summary="Delete a registration (its queued events are discarded)",
                tag="registrations",
                auth=PARTNER,
                parameters=[reg_id],
                problems=(404, 409),
                ok={"204": _response("Deleted.")},
            ),
        },
        base + "/{id}/restart": registration_action(
            "restartRegistration",
            "Restart a Suspended registration",
            "Suspended -> Restarting: the next queued event gets one attempt; success makes it "
            "Active and drains the queue, failure makes it Suspended again. Any other status "
            "answers 409. `resendFailed: true` also re-queues its Failed events.",
            body=_ref("RestartRequest"),
        ),
        base + "/{id}/pause": registration_action(
            "pauseRegistration",
            "Pause deliveries",
            "The partner's manual switch: the queue is kept, nothing is attempted. Answers 409 "
            "when the current status cannot be paused.",
            body=_ref("PauseRequest"),
        ),
        base + "/{id}/unpause": registration_action(
            "unpauseRegistration",
            "Unpause deliveries",
            "Paused -> Active. Answers 409 when the registration is not Paused.",
            body=_ref("EmptyRequest"),
        ),
        base + "/{id}/replay": {
            "post": _operation(
                operation_id="replayRegistration",
                summary="Replay a time range of event objects (Pending again)",
                description=(
                    "Every event object of the registration created in `[since, until)` whose "
                    "status is in `status` (default both Failed and Success) becomes Pending "
                    "with a new round of attempts, in creation order; test.event deliveries "
                    "are never queued. At most 100000 per call: more answers 422 naming the "
                    "count, and nothing changes. A Suspended or Paused registration's events "
                    "wait in its queue until restart or unpause. Deleted answers 409."
                ),
                tag="registrations",
                auth=PARTNER,
                parameters=[reg_id],
                body=_ref("ReplayRequest"),
                problems=(404, 409, 422),
                ok={"202": _response("Queued again.", _ref("ReplayResult"))},
            ),
        },
        base + "/{id}/rotate-secret": {
            "post": _operation(
                operation_id="rotateRegistrationSecret",
                summary="Rotate the signing secret",
                description=(
                    "During the grace period deliveries carry one signature per live secret."
                ),
                tag="registrations",
                auth=PARTNER,
                parameters=[reg_id],
                body=_ref("RotateSecretRequest"),
                body_required=False,
                problems=(404, 409),
                ok={"200": _response("The new secret.", _ref("RotateResult"))},
            ),
        },
        base + "/{id}/test": {
            "post": _operation(
                operation_id="testRegistration",
                summary="Send one synchronous test.event delivery",
                description=(
                    "The attempt is recorded; no status changes. At most 1 per second per "
                    "registration (burst 5) and BROKER_TEST_DELIVERY_PARTNER_RATE per partner: "
                    "429 with Retry-After beyond."
                ),
                tag="registrations",
                auth=PARTNER,
                parameters=[reg_id],
                body=_ref("EmptyRequest"),
                body_required=False,
                problems=(404, 409, 429),
                ok={"200": _response("The outcome of the attempt.", _ref("TestResult"))},
            ),
        },
        base + "/{id}/stats": {
            "get": _operation(
                operation_id="getRegistrationStats",
                summary="Delivery stats over a period, in 60 buckets",
                description=(
                    "Attempts by outcome, success rate, latency percentiles and queue depth. "
                    "Read from per-bucket rollups written with each result: cheap at any "
                    "volume. A Deleted registration answers 404, as GET does."
                ),
                tag="registrations",
                auth=PARTNER,
                parameters=[
                    reg_id,
                    _query_param(
                        "period",
                        "1h (1-minute buckets), 24h (24-minute) or 7d (168-minute); default 24h.",
                        {"type": "string", "enum": list(STATS_PERIODS), "default": "24h"},
                    ),
                ],
                problems=(404,),
                ok={"200": _response("The stats.", _ref("RegistrationStats"))},
            ),
        },
        "/webhooks/v1/events": {
            "get": _operation(
                operation_id="listEvents",
                summary="List event objects, newest first",
                tag="events",
                auth=PARTNER,
                parameters=[
                    _query_param(
                        "registrationId",
                        "Only this registration's events.",
                        {"type": "string", "format": "uuid"},
                    ),
                    _query_param(
                        "eventName",
                        "Only this event name.",
                        {"type": "string", "minLength": 1, "maxLength": EVENT_NAME_MAX_LENGTH},
                    ),
                    _query_param(
                        "status",
                        "Only this status.",
                        {"type": "string", "enum": list(EVENT_STATUSES)},
                    ),
                    _query_param(
                        "createdAfter",
                        "Only events created after this time.",
                        {"type": "string", "format": "date-time"},
                    ),
                    _query_param(
                        "createdBefore",
                        "Only events created before this time.",
                        {"type": "string", "format": "date-time"},
                    ),
                    *_page_params(),
                ],
                ok={
                    "200": _response(
                        "A page of events.",
                        _ref("EventPage"),
                        links=_links("id", "$response.body#/data/0/id", *_EVENT_OPERATIONS),
                    )
                },
            ),
        },
        "/webhooks/v1/events/{id}": {
            "get": _operation(
                operation_id="getEvent",
                summary="Get an event object",
                tag="events",
                auth=PARTNER,
                parameters=[event_id],
                problems=(404,),
                ok={
                    "200": _response(
                        "The event.",
                        _ref("Event"),
                        links=_links(
                            "id", "$response.body#/id", "listEventAttempts", "resendEvent"
                        ),
                    )
                },
            ),
        },
        "/webhooks/v1/events/{id}/attempts": {
            "get": _operation(
                operation_id="listEventAttempts",
                summary="List an event's delivery attempts",
                tag="events",
                auth=PARTNER,
                parameters=[event_id],
                problems=(404,),
                ok={"200": _response("Every attempt.", _ref("AttemptList"))},
            ),
        },
        "/webhooks/v1/events/{id}/resend": {
            "post": _operation(
                operation_id="resendEvent",
                summary="Resend an event (Pending again, a new round of attempts)",
                tag="events",
                auth=PARTNER,
                parameters=[event_id],
                problems=(404, 409),
                ok={
                    "202": _response(
                        "Queued again.",
                        _ref("Event"),
                        links=_links("id", "$response.body#/id", "getEvent", "listEventAttempts"),
                    )
                },
            ),
        },
        "/webhooks/v1/event-types": {
            "get": _operation(
                operation_id="listEventTypes",
                summary="List the event type catalog",
                tag="event-types",
                auth=PARTNER,
                ok={"200": _response("The catalog.", _ref("EventTypeList"))},
            ),
        },
    }


def _service_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": _operation(
                operation_id="healthz",
                summary="Liveness: 200 while the process runs",
                tag="service",
                auth=None,
                database=False,
                ok={"200": _response("Alive.", _ref("Health"))},
            ),
        },
        "/readyz": {
            "get": _operation(
                operation_id="readyz",
                summary="Readiness: 200 only with the database reachable and migrated",
                tag="service",
                auth=None,
                ok={"200": _response("Ready.", _ref("Health"))},
            ),
        },
        "/metrics": {
            "get": _operation(
                operation_id="metrics",
                summary="Prometheus metrics",
                description="Gauges are refreshed from the database, so this can answer 503.",
                tag="service",
                auth=None,
                ok={
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
        },
        "/openapi.json": {
            "get": _operation(
                operation_id="openapi",
                summary="This OpenAPI 3.1 document",
                tag="service",
                auth=None,
                database=False,
                ok={"200": _response("The document.", {"type": "object"})},
            ),
        },
    }


def _portal_paths() -> dict[str, Any]:
    partner_id = _path_param("id", "Partner id.")
    return {
        "/admin/v1/partners/{id}/portal-links": {
            "post": _operation(
                operation_id="createPortalLink",
                summary="Create a short-lived link that signs the partner into the portal",
                tag="admin",
                auth=ADMIN,
                parameters=[partner_id],
                body=_ref("PortalLinkCreate"),
                body_required=False,
                problems=(404,),
                ok={"201": _response("Created; the token is shown only here.", _ref("PortalLink"))},
            ),
            "delete": _operation(
                operation_id="revokePortalLinks",
                summary="Revoke every portal link of the partner at once",
                tag="admin",
                auth=ADMIN,
                parameters=[partner_id],
                problems=(404,),
                ok={"204": _response("Revoked.")},
            ),
        },
        "/webhooks/v1/session": {
            "get": _operation(
                operation_id="getSession",
                summary="The calling credential: its partner, read-only or not, its expiry",
                tag="registrations",
                auth=PARTNER,
                ok={"200": _response("The session.", _ref("PortalSession"))},
            ),
        },
    }


def _webhooks() -> dict[str, Any]:
    def header(name: str, description: str, schema: Schema) -> Schema:
        return {
            "name": name,
            "in": "header",
            "required": True,
            "description": description,
            "schema": schema,
        }

    return {
        "eventObject": {
            "post": {
                "operationId": "deliverEventObject",
                "summary": "An event object POSTed to a registration's URL",
                "description": (
                    "Sent with `Content-Type: application/json`, no redirects followed. If the "
                    "registration has `basicAuth`, also `Authorization: Basic <basicAuth>`. "
                    "Verify the Standard Webhooks signature before trusting the body."
                ),
                "tags": ["webhooks"],
                "security": [],
                "parameters": [
                    header(
                        "webhook-id",
                        "The event id; the same on every attempt (deduplicate on it).",
                        {"type": "string", "format": "uuid"},
                    ),
                    header(
                        "webhook-timestamp",
                        "Unix seconds when this attempt was signed.",
                        {"type": "integer", "minimum": 0},
                    ),
                    header(
                        "webhook-signature",
                        (
                            "Space-separated "
                            '`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` entries, '
                            "keyed with the bytes the base64 after the secret's `whsec_` decodes "
                            "to; one entry per live secret during a rotation's grace period."
                        ),
                        {"type": "string", "pattern": SIGNATURE_PATTERN},
                    ),
                    header(
                        "User-Agent",
                        "`broker-webhooks/<version>`.",
                        {"type": "string", "pattern": r"^broker-webhooks/"},
                    ),
                ],
                "requestBody": {"required": True, "content": _json(_ref("Event"))},
                "responses": {
                    "2XX": {"description": "Delivered."},
                    "410": {
                        "description": "Gone: the registration becomes Suspended at once.",
                    },
                    "default": {
                        "description": (
                            "Any other answer (3xx, 4xx, 5xx), a timeout or a connection error is "
                            "a failure, retried on the schedule; a Retry-After on 429/503 is "
                            "honoured. After the last retry the event is Failed and the "
                            "registration Suspended."
                        ),
                    },
                },
            }
        }
    }


_DESCRIPTION = """\
broker aggregates resource events from core systems into signed event objects delivered to
partners' webhook registrations.

**Authentication.** Every `/admin/v1/*`, `/internal/v1/*` and `/webhooks/v1/*` request carries
`Authorization: Bearer <key>`: the admin token for `/admin/v1/*`, a producer key for
`/internal/v1/*`, a partner key for `/webhooks/v1/*` (scoped to that partner). A missing, unknown
or revoked key answers 401; a valid key of the wrong kind answers 403; another partner's
registration or event answers 404, exactly as if it did not exist.

**Errors.** Every 4xx and 5xx body is `application/problem+json` (RFC 9457) with at least `title`,
`status` and `detail`. Validation failures (400) add `errors: [{"field", "message"}]`, naming
batch items by index (`events[3].resource`). A request that fails validation changes nothing.

**Aggregation.** Resource events are grouped per (partner, event name). A group's window opens at
its first resource event and closes after `BROKER_WINDOW_MIN_SECONDS` (default 30) without a new
one, `BROKER_WINDOW_MAX_SECONDS` (default 120) after it opened, or at
`BROKER_WINDOW_MAX_RESOURCES` (default 1000) distinct resources, whichever comes first. At close,
one event object is created per matching, non-Deleted registration of the partner, listing each
resource once in first-seen order, and delivered as described under `webhooks`.
"""


def openapi_document(version: str, *, ingest_max_events: int = INGEST_MAX_EVENTS) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of broker's HTTP API, as a fresh JSON-serializable dict.

    ``ingest_max_events`` is ``BROKER_INGEST_MAX_EVENTS`` so that the served document matches the
    running server's batch limit.
    """
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "broker",
            "version": version,
            "summary": "An aggregating event-batch webhook broker.",
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "admin", "description": "Partners, keys and the event type catalog."},
            {"name": "producer", "description": "Resource events from core systems."},
            {"name": "registrations", "description": "A partner's webhook registrations."},
            {"name": "events", "description": "A partner's event objects and their attempts."},
            {"name": "event-types", "description": "The event type catalog, for partners."},
            {"name": "service", "description": "Health, readiness, metrics and this document."},
            {"name": "webhooks", "description": "What broker POSTs to registrations."},
        ],
        "paths": {
            **_admin_paths(),
            **_producer_paths(),
            **_partner_paths(),
            **_service_paths(),
            **_portal_paths(),
        },
        "webhooks": _webhooks(),
        "components": {
            "schemas": _schemas(ingest_max_events),
            "responses": _problem_response_components(),
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
            "securitySchemes": {
                ADMIN: {
                    **bearer,
                    "description": "The admin token (BROKER_ADMIN_TOKEN); for /admin/v1/*.",
                },
                PRODUCER: {
                    **bearer,
                    "description": (
                        "A producer key (POST /admin/v1/producer-keys); for /internal/v1/*."
                    ),
                },
                PARTNER: {
                    **bearer,
                    "description": (
                        "A partner key (POST /admin/v1/partners or /admin/v1/partners/{id}/keys), "
                        "or a portal link's token (POST /admin/v1/partners/{id}/portal-links; "
                        "read-only links answer 403 to every non-GET); for /webhooks/v1/*, "
                        "scoped to that partner."
                    ),
                },
            },
        },
    }
