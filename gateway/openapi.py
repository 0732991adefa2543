"""The OpenAPI document, generated from the routes and made to tell the truth about them.

FastAPI describes what the routes declare: parameters, bodies, the success response and the
security dependencies (``gateway.deps`` and ``gateway.admin.auth`` read credentials through
``fastapi.security`` classes, so both bearer schemes appear). What it cannot see is added here,
once, from the same declarations:

- every error leaves in OpenAI's envelope, the ``ErrorEnvelope`` component;
- 400 on every operation that takes a parameter or a body (validation errors are rendered
  as 400 ``invalid_value`` / ``missing_required_parameter``, never FastAPI's 422, which is
  dropped from the document), 413 on every operation with a body (the upload cap applies to
  all of them), 401 and 403 on every operation behind a key or token, 503 everywhere (a
  draining replica or an unreachable ledger);
- statuses only some operations return (402, 404, 409, 429, …) are declared on the route with
  ``error_responses``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

ERROR_SCHEMA_REF = "#/components/schemas/ErrorEnvelope"


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error.")
    param: str | None = Field(description="The request field at fault, when there is one.")
    code: str | None = Field(description="A stable machine code, e.g. invalid_value.")


class ErrorEnvelope(BaseModel):
    """OpenAI's error envelope, used by every error of the gateway's API."""

    error: ErrorDetail


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: a parameter out of range or of the wrong type (invalid_value), "
    "a missing one (missing_required_parameter), or audio that cannot be decoded "
    "(invalid_audio).",
    401: "No credentials, or unknown, revoked or expired ones (invalid_api_key for API keys, "
    "invalid_token for admin tokens).",
    402: "The tenant's prepaid credit or monthly quota cannot cover the request's worst case "
    "(insufficient_quota); nothing was billed.",
    403: "The key or token lacks the scope or model (permission_denied).",
    404: "No such resource (not_found, model_not_found, …).",
    409: "Conflict with the current state (already_exists, conflict, idempotency_key_reused, "
    "idempotency_request_in_progress).",
    410: "The job's result was erased at the end of its retention period (result_expired).",
    413: "The body or the audio is over the configured limit (file_too_large, audio_too_long).",
    429: "Rate limit hit (rate_limit_exceeded); retry after Retry-After seconds.",
    503: "Temporarily unavailable: no healthy node (upstream_unavailable), the ledger busy or "
    "unreachable (ledger_unavailable), the replica draining (gateway_draining), the rate "
    "limiter's store down or the identity provider unreachable; nothing was billed.",
}


def header(description: str, kind: str, **schema: Any) -> dict[str, Any]:
    """A response header in OpenAPI form."""
    return {"description": description, "schema": {"type": kind, **schema}}


RETRY_AFTER_HEADER = header("Seconds to wait before retrying.", "integer")
RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": header("Requests allowed per window.", "integer"),
    "x-ratelimit-remaining-requests": header("Requests left in the window.", "integer"),
    "x-ratelimit-reset-requests": header("When the window frees a request, e.g. 1s.", "string"),
}
HEADERS_BY_STATUS: dict[int, dict[str, Any]] = {
    429: {"Retry-After": RETRY_AFTER_HEADER, **RATE_LIMIT_HEADERS},
    503: {"Retry-After": RETRY_AFTER_HEADER},
}


BILLING_HEADERS: dict[str, Any] = {
    "x-billing-output-tokens": header("Output tokens billed for this request.", "integer"),
    "x-billing-cost-micros": header(
        "What this request cost, in micro-units of the currency.", "integer"
    ),
    "x-billing-currency": header("ISO 4217 currency.", "string"),
    "x-billing-request-id": header("The ledger row of this charge.", "string"),
    "x-cache": header(
        "hit when answered from the result cache, else miss.", "string", enum=["hit", "miss"]
    ),
}


def error_response(status: int) -> dict[str, Any]:
    """One error status in OpenAPI form, its body the envelope."""
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
    }
    if status in HEADERS_BY_STATUS:
        response["headers"] = HEADERS_BY_STATUS[status]
    return response


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """For a route's ``responses=``: the error statuses only it returns."""
    return {status: error_response(status) for status in statuses}


# Every billed audio route: on top of the statuses every operation gets, a model it does not
# know or may not use (404/403), credit or quota exhausted (402), an Idempotency-Key reused or
# still in progress (409), the rate limit (429).
BILLED_ERRORS = error_responses(402, 404, 409, 429)


def text_content(*media_types: str) -> dict[str, Any]:
    """Text bodies (transcripts, subtitles, CSV) for a route's ``responses=``."""
    return {media_type: {"schema": {"type": "string"}} for media_type in media_types}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """``app.openapi``: FastAPI's document with the statuses it cannot see."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorDetail"] = ErrorDetail.model_json_schema()
    schemas["ErrorEnvelope"] = {
        "title": "ErrorEnvelope",
        "description": ErrorEnvelope.__doc__,
        "type": "object",
        "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
        "required": ["error"],
    }
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            add_error_statuses(operation)
    app.openapi_schema = document
    return document


def add_error_statuses(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    statuses = [503]
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.append(400)
    if operation.get("requestBody"):
        statuses.append(413)
    if operation.get("security"):
        statuses += [401, 403]
    for status in statuses:
        responses.setdefault(str(status), error_response(status))
    operation["responses"] = dict(sorted(responses.items()))
