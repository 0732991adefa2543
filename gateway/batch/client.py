"""HTTP to the gateway with the retries a batch needs: 429, 502/503/504 and 409
``idempotency_request_in_progress`` (an earlier attempt of the same file still holds its key,
for instance on a gateway that was stopped mid-request) are retried after the server's
``Retry-After`` (or an exponential backoff when it gives none), as are connection failures.
Every billed POST carries an ``Idempotency-Key`` derived from the audio and the parameters, so
a retry of a request whose answer was lost is never billed twice."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
IN_PROGRESS = "idempotency_request_in_progress"
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


class RequestFailed(Exception):
    """The gateway refused the request, or it could not be reached after every retry."""

    def __init__(self, reason: str, *, status_code: int | None = None, code: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.code = code


def idempotency_key(audio: bytes, parameters: dict[str, Any]) -> str:
    digest = hashlib.sha256(hashlib.md5(audio, usedforsecurity=False).digest())
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    return f"asrgw-batch-{digest.hexdigest()[:40]}"


def retry_after_seconds(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def backoff_seconds(attempt: int) -> float:
    """Exponential with jitter, so many clients retrying at once spread out."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _retried(response: httpx.Response) -> bool:
    if response.status_code in RETRIED_STATUSES:
        return True
    return response.status_code == 409 and _error_code(response) == IN_PROGRESS


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def describe_refusal(response: httpx.Response) -> RequestFailed:
    try:
        error = response.json()["error"]
        code, message = str(error.get("code")), str(error.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = "", response.text[:200]
    reason = (
        f"HTTP {response.status_code} {code}: {message}"
        if code
        else f"HTTP {response.status_code}: {message}"
    )
    return RequestFailed(reason, status_code=response.status_code, code=code or None)


@dataclass
class GatewayClient:
    http: httpx.Client
    max_retries: int = 6
    sleep: Callable[[float], None] = time.sleep

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A successful response; ``RequestFailed`` for a refusal (4xx, 5xx) or once retries
        are used up."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                if attempt > self.max_retries:
                    raise RequestFailed(f"could not reach the gateway: {error!r}") from error
                self.sleep(backoff_seconds(attempt))
                continue
            if _retried(response) and attempt <= self.max_retries:
                wait = retry_after_seconds(response)
                self.sleep(wait if wait is not None else backoff_seconds(attempt))
                continue
            if response.is_success:
                return response
            raise describe_refusal(response)
