"""The HTTP publishing gateway app: one FastAPI route per event type, a batch route, ops routes.

``POST /v1/events/{EventType}`` publishes one event, ``POST /v1/events:batch`` many (optionally
in one transaction); see :mod:`evstream.producers.gateway.handlers` for the order of checks.
``/openapi.json`` documents one request schema per event type.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Union, cast

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from evstream import __version__
from evstream.errors import ConfigError, GatewayRequestError
from evstream.producers.gateway.auth import TokenStore
from evstream.producers.gateway.avro import bound_integers, explicit_patterns
from evstream.producers.gateway.handlers import HEADER_PATTERN, Gateway, internal_error
from evstream.producers.gateway.http import KEY_PATTERN, PROBLEM_JSON, Problem, problem_response
from evstream.producers.gateway.publisher import Publisher
from evstream.producers.gateway.settings import GatewaySettings
from evstream.producers.settings import ProducerSettings
from evstream.schemas import Catalog, Event
from evstream.schemas.catalog import load_catalog
from evstream.settings import KafkaSettings, RegistrySettings

__all__ = ["BatchPublished", "FastPath", "Published", "create_app"]

_ERRORS = {
    400: "Malformed JSON, a JSON object with a key twice, a malformed header (Idempotency-Key, "
    "X-Correlation-Id, X-Causation-Id), or one of these or Authorization or Content-Type sent twice",
    401: "Missing or unknown bearer token",
    403: "The token may not publish this event type",
    408: "The request's head or body did not arrive in time (the connection is closed)",
    413: "Body too large (bytes, JSON values per event, or events for the token's rate)",
    415: "Not JSON",
    409: "The Idempotency-Key was used with another body",
    422: "The event does not match its schema (the first field errors listed, error_count in all)",
    429: "Rate limit of the token exceeded (see Retry-After)",
    431: "Request line and headers too large (the connection is closed)",
    500: "The gateway failed unexpectedly (see its log)",
    503: "Kafka or the schema registry unavailable; says whether anything was written",
}
_HEADERS = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "Present (true) when this is the stored answer to an earlier request with the same "
        "Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_RESPONSE_HEADERS = {201: ["Idempotent-Replayed"], 401: ["WWW-Authenticate"], 429: ["Retry-After"],
                     503: ["Retry-After", "Idempotent-Replayed"]}  # fmt: skip
_REQUEST_HEADERS = [
    ("Idempotency-Key", "A repeat with the same key (same token, route and body) gets the first answer"),
    ("X-Correlation-Id", "Carried to the event's ce_correlationid header"),
    ("X-Causation-Id", "Carried to the event's ce_causationid header"),
]
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}


class Published(BaseModel):
    """Where Kafka acknowledged an event: a consumer finds it at topic/partition/offset."""

    event_id: str
    event_type: str
    topic: str
    partition: int
    offset: int


class BatchPublished(BaseModel):
    """Every event of a batch, acknowledged (in one transaction when ``atomic``)."""

    atomic: bool
    results: list[Published]


def batch_model(catalog: Catalog, max_events: int) -> type[BaseModel]:
    """``{"events": [{"event_type": T, "data": <T>}, ...], "atomic": bool}``, discriminated by type."""
    literal = cast(Any, Literal)
    items: list[Any] = [
        create_model(f"{m.event_type()}Item", event_type=(literal[m.event_type()], ...), data=(m, ...))
        for m in catalog
    ]
    item = Annotated[Union[tuple(items)], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007
    return create_model(
        "BatchRequest",
        events=(list[item], Field(min_length=1, max_length=max_events)),  # type: ignore[valid-type]
        atomic=(  # strict like the events: 0 or "true" is no boolean
            bool,
            Field(default=False, strict=True, description="All events in one transaction: all or none."),
        ),
    )


def create_app(
    settings: GatewaySettings | None = None,
    *,
    kafka: KafkaSettings | None = None,
    registry: RegistrySettings | None = None,
    producer: ProducerSettings | None = None,
    catalog: Catalog | None = None,
) -> FastAPI:
    """The gateway app. Nothing connects until the server starts it (lifespan)."""
    settings = settings or GatewaySettings()
    catalog = catalog or load_catalog(settings.catalog)
    publisher = Publisher(settings, catalog, kafka=kafka, registry=registry, producer=producer)
    batch = batch_model(catalog, settings.max_batch_events)
    tokens = settings.all_tokens()
    known = {m.event_type() for m in catalog}
    for spec in tokens:
        unknown = sorted(set(spec.event_types) - known - {"*"})
        if unknown:
            raise ConfigError(f"token {spec.name!r} names unknown event types: {', '.join(unknown)}")
    gateway = Gateway(settings, TokenStore(tokens, settings.rate_limit), publisher, batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        gc.freeze()  # what start-up built lives as long as the process: keep it out of GC passes
        try:
            yield
        finally:
            await publisher.close()

    app = FastAPI(
        title="evstream gateway",
        version=__version__,
        description="Publish schema-checked events to Kafka over HTTP. A 201 means Kafka acknowledged "
        "the event (acks=all); its topic, partition and offset are in the response.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.fast_paths = {}
    # Requests are served by plain Starlette routes (FastAPI's per-request wrapping cost ~10 % of
    # the gateway's CPU); the same endpoints declared on a docs-only router feed /openapi.json.
    docs = APIRouter()
    for model in catalog:
        event_type = model.event_type()
        endpoint = gateway.single(model)
        app.router.routes.append(Route(f"/v1/events/{event_type}", endpoint, methods=["POST"]))
        app.state.fast_paths[f"/v1/events/{event_type}"] = request_response(endpoint)
        docs.add_api_route(
            f"/v1/events/{event_type}",
            endpoint,
            methods=["POST"],
            name=f"publish_{event_type}",
            summary=f"Publish one {event_type} (topic {publisher.topic_for(event_type)})",
            tags=["events"],
            status_code=201,
            response_model=None,
            responses={201: {"model": Published, "description": "Acknowledged by Kafka"}},
            openapi_extra={"requestBody": _body_ref(model.__name__), "x-event-type": event_type},
        )
    app.router.routes.append(Route("/v1/events:batch", gateway.batch, methods=["POST"]))
    app.state.fast_paths["/v1/events:batch"] = request_response(gateway.batch)
    docs.add_api_route(
        "/v1/events:batch",
        gateway.batch,
        methods=["POST"],
        name="publish_batch",
        summary="Publish many events; atomic=true publishes them in one Kafka transaction",
        tags=["events"],
        status_code=201,
        response_model=None,
        responses={201: {"model": BatchPublished, "description": "All acknowledged"}},
        openapi_extra={"requestBody": _body_ref("BatchRequest")},
    )

    known_types = ", ".join(m.event_type() for m in catalog)

    async def unknown_type(request: Request) -> Response:
        try:  # the caller must be known (401) and within its rate (429) to learn the types
            gateway.admit(request)
        except GatewayRequestError as exc:
            return problem_response(exc)
        return problem_response(GatewayRequestError(404, "unknown event type", f"known: {known_types}"))

    app.router.routes.append(Route("/v1/events/{event_type}", unknown_type, methods=["POST"]))
    _ops_routes(app, publisher)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own errors (404 unknown path, 405 method) as problem+json."""
        assert isinstance(exc, HTTPException)
        title = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "error")
        error = GatewayRequestError(exc.status_code, title, str(exc.detail), headers=dict(exc.headers or {}))
        return problem_response(error)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return internal_error()

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    avro = [m.avro_schema_dict() for m in catalog]
    app.openapi = lambda: _openapi(app, [*docs.routes, *app.routes], [*catalog, batch, Problem], avro)  # type: ignore[method-assign]
    return app


class FastPath:
    """What the server runs: POSTs to the publish routes go straight to their endpoints; all else
    (lifespan, docs, ops, unknown paths) to the FastAPI app.

    FastAPI's middleware stack and router cost ~11 % of the gateway's CPU per request; the publish
    endpoints handle their own errors (problem+json), so they do not need them.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.paths: dict[str, ASGIApp] = app.state.fast_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.paths.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _body_ref(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _openapi(
    app: FastAPI, routes: list[BaseRoute], models: list[type[BaseModel]], avro: list[dict[str, Any]]
) -> dict[str, Any]:
    """FastAPI's document, made to say what is served: one request schema per event type (and the
    batch body) with the Avro integer ranges, every status with its problem+json body and
    headers, the bearer scheme, the request headers, and the ops routes as text."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=routes)
        _, defs = models_json_schema(
            [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
        )
        schemas = defs.get("$defs", {})
        bound_integers(schemas, avro)
        explicit_patterns(schemas)
        _key_patterns(schemas, [m for m in models if issubclass(m, Event)])
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {}).update(schemas)
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from `evstream gateway token`",
            }
        }
        for path, item in doc["paths"].items():
            for op in item.values():
                if "events" in op.get("tags", []):
                    _publish_operation(op)
                elif path == "/metrics":
                    op["responses"] = {"200": {"description": "Prometheus text format", **_TEXT}}
                elif path == "/readyz":
                    op["responses"] = {
                        "200": {"description": "Ready", **_TEXT},
                        "503": {"description": "Not ready (says why)", **_TEXT},
                    }
                else:
                    op["responses"] = {"200": {"description": "Alive", **_TEXT}}
        app.openapi_schema = doc
    return app.openapi_schema


def _key_patterns(schemas: dict[str, Any], events: list[type[Event]]) -> None:
    """Each event's key field (its Kafka key) says which characters it refuses (KEY_PATTERN)."""
    for model in events:
        field = model.aggregate_field
        prop = schemas.get(model.__name__, {}).get("properties", {}).get(field)
        if not field or not isinstance(prop, dict) or prop.get("type") != "string":
            continue
        if "pattern" in prop:  # both must hold
            prop.setdefault("allOf", []).append({"pattern": KEY_PATTERN})
        else:
            prop["pattern"] = KEY_PATTERN


def _publish_operation(op: dict[str, Any]) -> None:
    created = op["responses"]["201"]
    op["security"] = [{"bearer": []}]
    op["parameters"] = [
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": HEADER_PATTERN},
        }
        for name, description in _REQUEST_HEADERS
    ] + [
        {
            "name": "traceparent",
            "in": "header",
            "required": False,
            "description": "W3C trace context, carried to the event (an invalid one is ignored)",
            "schema": {"type": "string"},
        }
    ]
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    responses: dict[str, Any] = {"201": created}
    for status, description in _ERRORS.items():
        responses[str(status)] = {"description": description, "content": problem}
    for status, names in _RESPONSE_HEADERS.items():
        responses[str(status)]["headers"] = {name: _HEADERS[name] for name in names}
    op["responses"] = responses


def _ops_routes(app: FastAPI, publisher: Publisher) -> None:
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    async def readyz() -> PlainTextResponse:
        reason = await publisher.readiness()
        if reason is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {reason}\n", status_code=503)

    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["ops"], summary="Liveness")
    app.add_api_route(
        "/readyz", readyz, methods=["GET"], tags=["ops"], summary="Ready: a Kafka broker answers"
    )
    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["ops"], summary="Prometheus metrics")
