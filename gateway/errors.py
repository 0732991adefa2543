"""Errors of the customer API, rendered in OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``.

```
GatewayError                    500 internal_error
├── InvalidRequest              400 invalid_request_error (code per case)
│   ├── InvalidAudio            400 invalid_audio
│   ├── UnsupportedLanguage     400 unsupported_language
│   └── ModelNotFound           404 model_not_found
├── AuthError                   401 invalid_api_key
│   └── ApiKeyInUrl             401 api_key_in_url (a WebSocket's URL carried an API key)
├── AdminAuthError              401 invalid_token (+ WWW-Authenticate)
├── PermissionDenied            403 permission_denied
├── NotFoundError               404 not_found
├── Conflict                    409 conflict (already_exists, …)
├── QuotaExceeded               402 insufficient_quota (never 429: SDKs retry those)
├── IdempotencyConflict         409 idempotency_key_reused
├── ClientGone                  499 client_closed_request (never reaches the client)
├── FileTooLarge                413 file_too_large
│   └── AudioTooLong            413 audio_too_long
└── RetryLater                  (+ Retry-After)
    ├── RateLimited             429 rate_limit_exceeded (+ x-ratelimit-*)
    ├── TooManyFailedAuthentications 429 too_many_failed_authentications (per address)
    ├── RateLimiterUnavailable  503 rate_limiter_unavailable (store down, mode closed)
    ├── UpstreamUnavailable     503 upstream_unavailable
    ├── IdempotencyInProgress   409 idempotency_request_in_progress
    ├── LedgerUnavailable       503 ledger_unavailable (database unreachable or busy)
    ├── AuthUnavailable         503 auth_unavailable (the JWKS could not be fetched)
    └── GatewayDraining         503 gateway_draining (this replica is shutting down)

gateway.nodes.errors.NodeNotFound (404 node_not_found), NodeNotAllowed (403 node_not_allowed)
and the jobs' errors in
gateway.jobs.errors subclass GatewayError too.
```

``error_response`` is the one HTTP rendering of any of them: status, envelope and headers.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class GatewayError(Exception):
    status_code = 500
    code = "internal_error"
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(error: GatewayError) -> JSONResponse:
    """The error as an HTTP response: its status, its envelope and its headers."""
    return JSONResponse(error.envelope(), status_code=error.status_code, headers=error.headers())


class InvalidRequest(GatewayError):
    status_code = 400
    code = "invalid_request"
    error_type = "invalid_request_error"


class InvalidAudio(InvalidRequest):
    code = "invalid_audio"


class UnsupportedLanguage(InvalidRequest):
    code = "unsupported_language"


class ModelNotFound(InvalidRequest):
    status_code = 404
    code = "model_not_found"


class AuthError(GatewayError):
    status_code = 401
    code = "invalid_api_key"
    error_type = "invalid_request_error"


class ApiKeyInUrl(AuthError):
    """An API key in a URL's query sits in every proxy's access log: refused unread."""

    code = "api_key_in_url"


class AdminAuthError(GatewayError):
    status_code = 401
    code = "invalid_token"
    error_type = "invalid_request_error"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class PermissionDenied(GatewayError):
    status_code = 403
    code = "permission_denied"
    error_type = "invalid_request_error"


class NotFoundError(GatewayError):
    status_code = 404
    code = "not_found"
    error_type = "invalid_request_error"


class Conflict(GatewayError):
    status_code = 409
    code = "conflict"
    error_type = "invalid_request_error"


class QuotaExceeded(GatewayError):
    status_code = 402
    code = "insufficient_quota"
    error_type = "insufficient_quota"


class IdempotencyConflict(GatewayError):
    status_code = 409
    code = "idempotency_key_reused"
    error_type = "invalid_request_error"


class ClientGone(GatewayError):
    """The client disconnected before its result was ready: nothing is billed or sent."""

    status_code = 499
    code = "client_closed_request"
    error_type = "invalid_request_error"


class FileTooLarge(GatewayError):
    status_code = 413
    code = "file_too_large"
    error_type = "invalid_request_error"


class AudioTooLong(FileTooLarge):
    code = "audio_too_long"


class RetryLater(GatewayError):
    """A refusal the client should retry: carries ``Retry-After``."""

    def __init__(self, message: str, *, retry_after_seconds: int = 5) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class RateLimited(RetryLater):
    """OpenAI's shape: type ``requests``, code ``rate_limit_exceeded``; SDKs retry these."""

    status_code = 429
    code = "rate_limit_exceeded"
    error_type = "requests"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: int,
        rate_limit_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.rate_limit_headers = rate_limit_headers or {}

    def headers(self) -> dict[str, str]:
        return {**self.rate_limit_headers, **super().headers()}


class TooManyFailedAuthentications(RetryLater):
    """An address past ``GATEWAY_API_KEY_FAILURE_LIMIT`` failed authentications: its keys are
    not looked up until the window moves on (gateway/ratelimits/key_guesses.py)."""

    status_code = 429
    code = "too_many_failed_authentications"
    error_type = "requests"


class RateLimiterUnavailable(RetryLater):
    status_code = 503
    code = "rate_limiter_unavailable"
    error_type = "server_error"


class UpstreamUnavailable(RetryLater):
    status_code = 503
    code = "upstream_unavailable"
    error_type = "server_error"


class AuthUnavailable(RetryLater):
    """The identity provider's signing keys could not be fetched."""

    status_code = 503
    code = "auth_unavailable"
    error_type = "server_error"


class IdempotencyInProgress(RetryLater):
    """Another attempt holds the Idempotency-Key's lease past the bounded wait."""

    status_code = 409
    code = "idempotency_request_in_progress"
    error_type = "invalid_request_error"


class LedgerUnavailable(RetryLater):
    """The ledger database cannot take the request's money now: nothing was billed."""

    status_code = 503
    code = "ledger_unavailable"
    error_type = "server_error"


class GatewayDraining(RetryLater):
    """This replica is shutting down (``gateway.shutdown``); another one will answer."""

    status_code = 503
    code = "gateway_draining"
    error_type = "server_error"
