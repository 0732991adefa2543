"""``GET /metrics`` and the request metrics of every HTTP request.

``RequestMetricsMiddleware`` is the outermost layer, so it times and counts every response,
including those sent by the inner middlewares themselves (413 while an upload streams, the 500
of a crash). Labels stay bounded:

- ``route``: the template of the route that served the request ("/v1/jobs/{job_id}"); a request
  refused before routing (an upload over the limit) is matched against the templates of the
  OpenAPI schema; a path no route serves is "unmatched".
- ``status``: the status class, "2xx" … "5xx".
- ``code``: the ``error.code`` of the JSON error envelope, "none" on success. It is read from
  the response body of error responses only (a few hundred bytes); a code that does not look
  like one of ours is counted as "other", an error body that is not an envelope as "unknown".
- ``method``: the usual HTTP methods, anything else as "other".

``/metrics`` takes ``Authorization: Bearer <GATEWAY_METRICS_TOKEN>`` when that is set.

With ``asrgw gateway --workers N`` the workers count into files under ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode, set up by the CLI), and any worker's ``/metrics``
serves every worker's counts together.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.errors import GatewayError

# prometheus_client's own variable: set, counted metrics go to files shared by the workers.
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Error envelopes are a few hundred bytes; a larger error body is not parsed.
MAX_ERROR_BODY_BYTES = 16 * 1024

router = APIRouter()


class MetricsUnauthorized(GatewayError):
    status_code = 401
    code = "invalid_metrics_token"
    error_type = "invalid_request_error"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


def require_metrics_token(token: str, authorization: str | None) -> None:
    if not token:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        raise MetricsUnauthorized(
            "/metrics requires the metrics token: Authorization: Bearer <GATEWAY_METRICS_TOKEN>."
        )


def exposition(app: FastAPI) -> bytes:
    """The counted metrics (this process's, or every worker's when ``asrgw gateway
    --workers N`` runs them in multiprocess mode), then the pool's and the ledger's read now."""
    scrape_time = CollectorRegistry(auto_describe=False)
    scrape_time.register(metrics.PoolCollector(app.state.nodes))
    scrape_time.register(metrics.LedgerCollector(app.state.database))
    return generate_latest(counted_registry()) + generate_latest(scrape_time)


def counted_registry() -> CollectorRegistry:
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if not directory:
        return REGISTRY
    forget_dead_workers(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def forget_dead_workers(directory: Path) -> None:
    """A worker that died (and was replaced) leaves its live gauges' files: drop them, so
    ``livesum`` gauges count the living only. Counters and histograms keep its counts."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus exposition of the gateway's metrics."""
    require_metrics_token(request.app.state.settings.metrics_token, authorization)
    # The ledger gauges query the database: off the event loop.
    body = await anyio.to_thread.run_sync(exposition, request.app)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install_monitoring(app: FastAPI) -> None:
    """Serve ``/metrics`` and count every request; call after every other middleware is added,
    so this one is outermost."""
    app.include_router(router)
    app.add_middleware(RequestMetricsMiddleware, templates=RouteTemplates(app))


class RouteTemplates:
    """The route template of a request: the route that served it, or for one refused before
    routing, the first OpenAPI path template its path matches."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def of(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        if self._patterns is None:
            templates = self.app.openapi().get("paths", {})
            self._patterns = [(compile_path(template)[0], template) for template in templates]
        for pattern, template in self._patterns:
            if pattern.match(scope["path"]):
                return template
        return "unmatched"


def error_code(body: bytes) -> str:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return code if isinstance(code, str) and ERROR_CODE.fullmatch(code) else "other"


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, templates: RouteTemplates) -> None:
        self.app = app
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        is_json = False
        code: str | None = None
        error_body = bytearray()

        async def observing_send(message: Message) -> None:
            nonlocal status, is_json, code
            if message["type"] == "http.response.start":
                status = int(message["status"])
                is_json = _is_json(message.get("headers", []))
                code = "none" if status < 400 else None
            elif message["type"] == "http.response.body" and code is None:
                error_body.extend(message.get("body", b""))
                if not is_json or len(error_body) > MAX_ERROR_BODY_BYTES:
                    code = "unknown"
                elif not message.get("more_body", False):
                    code = error_code(bytes(error_body))
            await send(message)

        metrics.REQUESTS_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, observing_send)
        except Exception:
            code = code or "internal_error"
            raise
        finally:
            metrics.REQUESTS_IN_FLIGHT.dec()
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = self.templates.of(scope)
            metrics.REQUESTS.labels(method, route, f"{status // 100}xx", code or "unknown").inc()
            metrics.REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)


def _is_json(headers: Any) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower() == b"application/json"
    return False
