"""``create_app(settings)``: the gateway's FastAPI application."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from billing.config import BillingSettings
from billing.db import Database
from billing.errors import AlreadyExists, BillingError, InvalidValue, NotFound
from billing.errors import Conflict as BillingConflict
from billing.errors import LedgerUnavailable as BillingLedgerUnavailable
from billing.migrate import upgrade_to_head
from billing.models.types import utcnow
from billing.reservations.sweeper import purge_keys, release_expired
from gateway import system
from gateway.admin.auth import TokenVerifier
from gateway.admin.router import router as admin_router
from gateway.billed.idempotency import KeyClaims
from gateway.billed.leases import LeaseKeeper
from gateway.cache.service import build_result_cache
from gateway.client_secrets import endpoints as client_secrets
from gateway.client_secrets.service import purge_client_secrets
from gateway.compat import endpoints as compat
from gateway.config import GatewaySettings
from gateway.console.deps import CONSOLE_UPLOADS
from gateway.console.router import console_error_page, install_console
from gateway.context import RequestContextMiddleware
from gateway.credentials_first import (
    API_UPLOAD_PATHS,
    CredentialsFirstMiddleware,
    admit_api_key,
)
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    LedgerUnavailable,
    NotFoundError,
    error_response,
)
from gateway.jobs import endpoints as jobs
from gateway.jobs.runtime import run_job_tasks
from gateway.keycache import KeyCache
from gateway.ledger import Ledger
from gateway.log_redaction import redact_url_secrets
from gateway.monitoring import install_monitoring
from gateway.nodes import NodePool
from gateway.nodes.client import AiohttpNodeClient, HttpxNodeClient, NodeClient
from gateway.nodes.discovery import NodeDiscovery, Resolver
from gateway.nodes.membership import run_membership_sync
from gateway.openapi import build_openapi
from gateway.ratelimits.headers import RateLimitHeadersMiddleware
from gateway.ratelimits.key_guesses import KeyGuessThrottle
from gateway.ratelimits.service import RateLimits
from gateway.ratelimits.store import open_redis
from gateway.security_headers import SecurityHeadersMiddleware
from gateway.shutdown import Drain, DrainMiddleware
from gateway.streaming import endpoints as streaming
from gateway.transcriptions import endpoints as transcriptions
from gateway.upload_limit import UploadLimitMiddleware
from gateway.usage import endpoints as usage

logger = logging.getLogger(__name__)
# Where a request field sits: a validation error's location names it first, then the field.
PARAMETER_PLACES = ("body", "query", "header", "path", "cookie")


def create_app(
    settings: GatewaySettings | None = None,
    billing_settings: BillingSettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> FastAPI:
    """Build the gateway. ``transport`` replaces the network to the nodes, ``resolver`` the
    system's DNS resolver for the DNS names of GATEWAY_NODES (tests only)."""
    settings = settings or GatewaySettings()
    billing_settings = billing_settings or BillingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await anyio.to_thread.run_sync(upgrade_to_head, billing_settings.database_url)
        database = Database(
            billing_settings.database_url,
            echo=billing_settings.echo_sql,
            sqlite_busy_timeout_seconds=billing_settings.sqlite_busy_timeout_seconds,
        )
        ledger = Ledger(database)
        await ledger.open()
        client: NodeClient = (
            HttpxNodeClient(transport)
            if transport is not None
            else AiohttpNodeClient(idle_seconds=settings.node_idle_connection_seconds)
        )
        async with anyio.create_task_group() as background:
            app.state.database = database
            app.state.ledger = ledger
            app.state.lease_keeper = leases = LeaseKeeper(ledger, settings.request_lease_seconds)
            app.state.key_claims = KeyClaims(
                ledger,
                lease_seconds=settings.request_lease_seconds,
                wait_seconds=settings.idempotency_wait_seconds,
            )
            app.state.nodes = nodes = NodePool(settings, client)
            background.start_soon(leases.run)
            background.start_soon(sweep_ledger, database, settings)
            background.start_soon(nodes.run_health_checks)
            discovery = NodeDiscovery.from_settings(settings, nodes, resolver)
            if discovery is not None:
                background.start_soon(discovery.run)
            background.start_soon(
                run_membership_sync, nodes, database, settings.node_health_interval_seconds
            )
            app.state.rate_limits = rate_limits = RateLimits.from_settings(settings)
            background.start_soon(rate_limits.run_lease_renewal)
            cache_redis = open_redis(settings) if settings.redis_url else None
            app.state.result_cache = build_result_cache(settings, cache_redis)
            job_scope = anyio.CancelScope()
            app.state.job_store = await background.start(
                run_job_tasks, job_scope, database, nodes, settings, app.state.result_cache
            )
            # Draining puts the jobs being worked back at once: another replica takes them.
            drain.on_drain(job_scope.cancel)
            try:
                with drain.signal_hook():
                    background.start_soon(drain.run)
                    yield
            finally:
                background.cancel_scope.cancel()
                await rate_limits.aclose()
                if cache_redis is not None:
                    # The task group's scope is cancelled by now: close under a shield.
                    with anyio.CancelScope(shield=True):
                        await cache_redis.aclose()
                with anyio.CancelScope(shield=True):
                    await client.aclose()
                    await ledger.aclose()
                database.dispose()

    # Uploads are read into memory whole anyway (the probe, the MD5 and the node need every
    # byte): Starlette's default of spooling parts past 1 MB to a temporary file only adds disk
    # writes and reads. The upload limit bounds the part.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes)
    app = FastAPI(
        title="asr-billing-gateway",
        description="Metered speech recognition: OpenAI-compatible, billed per output token.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    drain = Drain(settings.shutdown_delay_seconds, settings.shutdown_grace_seconds)
    app.state.drain = drain
    app.state.billing_settings = billing_settings
    app.state.token_verifier = TokenVerifier(settings)
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.key_guesses = KeyGuessThrottle(settings)
    # The document tells what FastAPI cannot see: the error envelope and every status.
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(transcriptions.router)
    app.include_router(streaming.router)
    app.include_router(client_secrets.router)
    app.include_router(usage.router)
    app.include_router(jobs.router)
    app.include_router(compat.router)
    app.include_router(admin_router)
    if settings.console_enabled:
        install_console(app, settings)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(
        UploadLimitMiddleware,
        max_upload_bytes=settings.max_upload_bytes,
        path_limits={"/v1/jobs": settings.job_max_upload_bytes},
    )
    # Outside the upload limit and the app: no credentials, no body read.
    uploads = dict.fromkeys(API_UPLOAD_PATHS, admit_api_key)
    if settings.console_enabled:
        uploads.update(CONSOLE_UPLOADS)
    app.add_middleware(CredentialsFirstMiddleware, admissions=uploads)
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(RequestContextMiddleware)
    install_monitoring(app)
    redact_url_secrets()
    # Added last, so outermost: it stamps the responses every other layer makes.
    app.add_middleware(SecurityHeadersMiddleware, strict_transport=settings.console_cookie_secure)
    return app


def served_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The app as ``asrgw gateway`` serves it, in a process of its own: what start-up made
    (modules, routes, schemas: some 200,000 objects) is moved out of the cyclic garbage
    collector's sight, so its full collections, which come every thousand or so requests, no
    longer walk all of it (about 0.1 ms of CPU a request on two cores, 0.02 ms after)."""
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


async def sweep_ledger(database: Database, settings: GatewaySettings) -> None:
    """Release reservations whose gateway stopped renewing them (it died mid-request), and
    forget Idempotency-Keys past their retention. Any replica may do it: each release locks
    its tenant's account and is a no-op once the reservation is closed. Client tokens past
    use are forgotten too."""
    while True:
        try:
            released = await anyio.to_thread.run_sync(release_expired, database)
            if released:
                logger.warning("released %d expired reservations", released)
            retention = timedelta(seconds=settings.idempotency_retention_seconds)
            await anyio.to_thread.run_sync(purge_keys, database, utcnow() - retention)
            await anyio.to_thread.run_sync(purge_client_secrets, database)
        except Exception:
            logger.exception("ledger sweep failed")
        await anyio.sleep(settings.reservation_sweep_seconds)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's envelope with a stable code."""

    @app.exception_handler(GatewayError)
    async def handle_gateway_error(request: Request, error: GatewayError) -> Response:
        page = console_error_page(request, error)
        if page is not None:
            return page
        return error_response(error)

    @app.exception_handler(OperationalError)
    async def handle_database_error(request: Request, error: OperationalError) -> Response:
        # SQLite's "database is locked" past its busy timeout, or PostgreSQL gone.
        logger.warning("ledger database unavailable: %s", error.orig)
        unavailable = LedgerUnavailable(
            "The billing ledger is busy or unreachable; nothing was billed. Retry shortly.",
            retry_after_seconds=1,
        )
        return await handle_gateway_error(request, unavailable)

    @app.exception_handler(BillingError)
    async def handle_billing_error(request: Request, error: BillingError) -> Response:
        return await handle_gateway_error(request, as_gateway_error(error))

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, error: RequestValidationError) -> Response:
        problems = error.errors()
        first = problems[0] if problems else {}
        location = [str(part) for part in first.get("loc", ()) if part not in PARAMETER_PLACES]
        param = location[0].removesuffix("[]") if location else None
        if first.get("type") == "missing":
            invalid = InvalidRequest(
                f"Missing required parameter: '{param}'.",
                param=param,
                code="missing_required_parameter",
            )
        else:
            invalid = InvalidRequest(
                f"Invalid value for '{param}': {first.get('msg', 'invalid')}.",
                param=param,
                code="invalid_value",
            )
        return console_error_page(request, invalid) or error_response(invalid)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        body = {
            "error": {
                "message": str(error.detail),
                "type": "invalid_request_error",
                "param": None,
                "code": codes.get(error.status_code, "http_error"),
            }
        }
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def as_gateway_error(error: BillingError) -> GatewayError:
    """A billing refusal that reached HTTP unhandled, in the envelope (admin API mostly)."""
    if isinstance(error, NotFound):
        return NotFoundError(error.message)
    if isinstance(error, AlreadyExists):
        return Conflict(error.message, code="already_exists")
    if isinstance(error, BillingConflict):
        return Conflict(error.message)
    if isinstance(error, InvalidValue):
        return InvalidRequest(error.message, code="invalid_value")
    if isinstance(error, BillingLedgerUnavailable):
        return LedgerUnavailable(
            "The billing ledger is busy or unreachable; nothing was billed. Retry shortly.",
            retry_after_seconds=1,
        )
    return GatewayError(error.message)
