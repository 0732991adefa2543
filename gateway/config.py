"""Gateway settings (env prefix ``GATEWAY_``)."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

import httpx
import limits
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.addresses import is_loopback_host

# Admin tokens signed with this are accepted only in development.
DEFAULT_ADMIN_JWT_SECRET = "asrgw-development-admin-secret-not-for-production"
MIN_SECRET_LENGTH = 32
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256")

# What the official SDKs send by default; served by the gateway's default model.
OPENAI_MODEL_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")

# A GATEWAY_NODES entry starting with this is a DNS name whose addresses are the nodes.
DNS_NODES_PREFIX = "dns+"

# Nodes' health is polled this often unless configured; it is also the Retry-After a client is
# told when nothing sooner is known of the nodes (NodePool._retry_after, a broken node stream).
DEFAULT_NODE_HEALTH_INTERVAL_SECONDS = 5.0


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # Trusted proxies: comma-separated addresses and networks (10.0.0.5, 10.42.0.0/16) whose
    # X-Forwarded-For and X-Forwarded-Proto the gateway believes. The client's address is then
    # the right-most X-Forwarded-For entry that is not itself trusted, so what a client writes
    # there cannot pass it for someone else. Empty (the default) trusts no one: the address
    # is the connection's, as it must be when clients reach the gateway directly.
    forwarded_allow_ips: str = ""
    # Comma-separated inference nodes: base URLs, and DNS names standing for every address they
    # resolve to, written dns+http://NAME:PORT (a Kubernetes headless Service; docs/node.md).
    nodes: str = "http://127.0.0.1:8001"
    # How often the DNS names of GATEWAY_NODES are looked up again.
    node_dns_refresh_seconds: float = Field(default=10.0, gt=0)
    node_secret: str = ""
    # Where nodes registered through the admin API may be, besides the hosts of GATEWAY_NODES
    # (and loopback in development): comma-separated host names, *.suffix wildcards and CIDRs.
    # The gateway sends a node its secret and customers' audio (gateway/nodes/allowed.py).
    node_allowed_hosts: str = ""
    # The model OpenAI aliases (whisper-1, …) and requests without a known model resolve to.
    default_model: str = "whisper-tiny.en"
    max_upload_bytes: int = 25 * 1024 * 1024
    # Longer audio is refused on the synchronous routes (413 audio_too_long) and belongs in an
    # asynchronous job (POST /v1/jobs), which no HTTP timeout cuts short.
    max_sync_audio_seconds: float = Field(default=300.0, gt=0)
    # The realtime transcription WebSocket (/v1/realtime): a committed item (one turn of speech,
    # cut by server VAD, or a manual commit) holds at most this much audio, so a session is
    # reserved ahead this much worst case at a time; longer speech is committed in pieces.
    realtime_max_item_seconds: float = Field(default=30.0, gt=0, le=300)
    # An online model the nodes serve (FunASR's paraformer-zh-streaming): FunASR-protocol
    # sessions in online and 2pass mode get partial text from it while a turn is spoken.
    # Empty: each turn is answered once it ends.
    online_model: str = ""
    # A session is closed after this long (error session_expired), and after this long without
    # a client event (error idle_timeout); WebSocket pings alone do not keep it open.
    realtime_max_session_seconds: float = Field(default=3_600.0, gt=0)
    realtime_idle_timeout_seconds: float = Field(default=60.0, gt=0)
    # A live session (/v1/realtime, /funasr) looks its key up again this often, past the key
    # cache: a revoked or expired key ends its sessions within this long (invalid_api_key, 4401).
    realtime_key_recheck_seconds: float = Field(default=5.0, gt=0)
    # Client tokens for browser WebSockets (docs/streaming.md): POST /v1/realtime/client_secrets
    # mints one, usable by one connection, for this long unless the request asks otherwise …
    client_secret_seconds: int = Field(default=60, ge=1)
    # … and never longer than this.
    client_secret_max_seconds: int = Field(default=600, ge=1)
    node_connect_timeout_seconds: float = 5.0
    # An idle keep-alive connection to a node is reused only this long, which must stay below
    # the node's INFERENCE_KEEP_ALIVE_SECONDS: a node closing a connection as the gateway sends
    # on it would fail that request.
    node_idle_connection_seconds: float = Field(default=15.0, gt=0)
    # The longest one dispatch may take, retries included; the scaled timeout never exceeds it.
    node_timeout_seconds: float = 600.0
    # The node pool (docs/node.md): a request may wait on its node base + factor * audio seconds.
    node_timeout_base_seconds: float = Field(default=120.0, gt=0)
    node_timeout_per_audio_second: float = Field(default=1.0, ge=0)
    # How often each node's /health/ready is polled, and how long one poll may take.
    node_health_interval_seconds: float = Field(default=DEFAULT_NODE_HEALTH_INTERVAL_SECONDS, gt=0)
    node_health_timeout_seconds: float = Field(default=2.0, gt=0)
    # Nodes one request may try: connect errors and 502/503/504 move it to the next.
    node_max_attempts: int = Field(default=3, ge=1)
    # Consecutive failures that open a node's circuit, and how long it stays open.
    node_failure_threshold: int = Field(default=3, ge=1)
    node_circuit_open_seconds: float = Field(default=10.0, gt=0)
    # A synchronous request's reservation and Idempotency-Key lease last this long and are
    # renewed every third of it while the request runs: a gateway that dies mid-request holds
    # a tenant's credit, and its key, at most about this long (plus a sweep).
    request_lease_seconds: float = Field(default=30.0, ge=0.3)
    # A retry that finds its Idempotency-Key leased to a live attempt waits at most this long
    # for it (then 409 idempotency_request_in_progress with Retry-After).
    idempotency_wait_seconds: float = Field(default=10.0, ge=0)
    # How long a settled Idempotency-Key is remembered and replayed (then a retry is new).
    idempotency_retention_seconds: float = Field(default=86_400.0, gt=0)
    # How long past a job's deadline its reservation may stay open before the sweeper frees it,
    # and how often the sweeper looks for expired reservations.
    reservation_margin_seconds: float = 60.0
    reservation_sweep_seconds: float = Field(default=30.0, gt=0)
    # Graceful shutdown (gateway/shutdown.py): after SIGTERM, requests are still served this
    # long while /health/ready is already red (load balancers need it to notice) …
    shutdown_delay_seconds: float = Field(default=0.0, ge=0)
    # … and requests in flight get this long from SIGTERM to finish before they are cancelled.
    # Give the container at least this much plus a few seconds to stop before it is killed.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # Apply the ledger migrations on start (the embedded default); off where a deploy job does it.
    migrate_on_start: bool = True
    # /metrics requires "Authorization: Bearer <this>" when set; empty leaves it open (loopback).
    metrics_token: str = ""

    # How long a valid API key is remembered per process: the most a revocation or the end of a
    # rotation's grace period takes to reach every replica (0 looks every key up every time).
    key_cache_seconds: float = Field(default=2.0, ge=0, le=5)
    # Failed authentications (an unknown, revoked or expired API key) per client address (an
    # IPv4 address, an IPv6 /64) before its keys are no longer looked up (429), in the `limits`
    # notation; counted in Redis with GATEWAY_REDIS_URL (gateway/ratelimits/key_guesses.py).
    api_key_failure_limit: str = "30/minute"
    # "development" (the embedded default) or "production": production refuses default secrets.
    environment: Literal["development", "production"] = "development"
    # Admin API (docs/admin.md): HS256 tokens signed with this secret ("" turns HS256 off) …
    admin_jwt_secret: str = DEFAULT_ADMIN_JWT_SECRET
    # … and/or RS256/ES256 tokens verified with an identity provider's JWKS.
    admin_jwks_url: str = ""
    admin_jwks_algorithms: str = "RS256,ES256"
    # A token whose kid the JWKS lacks refetches it at most this often (anyone can make up kids).
    admin_jwks_refetch_seconds: float = Field(default=30.0, gt=0)
    admin_jwt_audience: str = "asrgw-admin"
    admin_jwt_issuer: str = "asrgw"
    admin_jwt_leeway_seconds: int = Field(default=30, ge=0)
    # The MD5 result cache (docs/api.md): in process memory, or in Redis with GATEWAY_REDIS_URL.
    cache_enabled: bool = True
    cache_ttl_seconds: float = Field(default=86_400.0, gt=0)
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # "tenant": results are shared only within a tenant; "global" shares them across tenants.
    cache_scope: Literal["tenant", "global"] = "tenant"

    # Rate limits (docs/api.md): "" keeps the counters in process memory (one replica); a
    # redis:// (rediss://, unix://) URL shares them across replicas.
    redis_url: str = ""
    # A Redis outage either admits requests unlimited ("open") or refuses them with 503.
    rate_limit_on_store_error: Literal["open", "closed"] = "open"
    # Short, so an unreachable Redis costs a request at most this (no retries).
    redis_socket_timeout_seconds: float = Field(default=0.5, gt=0)
    # Prefix of every rate-limit key in Redis, so deployments (or test runs) may share one.
    rate_limit_key_prefix: str = "asrgw"
    # A request-in-flight slot in Redis lives this long unless its replica renews it (every
    # third of it): the most a crashed replica's slots stay taken.
    concurrency_lease_seconds: float = Field(default=30.0, ge=3)

    # Asynchronous jobs (docs/jobs.md). Worker loops per gateway process, each working one job
    # at a time (0: this replica accepts jobs but works none); on SQLite one loop at most.
    job_workers: int = Field(default=2, ge=0)
    # How often an idle worker looks for a job, and the webhook sender for deliveries due.
    job_poll_seconds: float = Field(default=1.0, gt=0)
    # A worker renews its job's lease every third of this: a replica killed mid-job loses the
    # job to another within about this long.
    job_lease_seconds: float = Field(default=30.0, ge=0.3)
    # Attempts of one job, crashes and node outages included, before it fails.
    job_max_attempts: int = Field(default=3, ge=1)
    # A job put back after a node outage waits base * 2^(attempt - 1) seconds.
    job_retry_base_seconds: float = Field(default=5.0, ge=0)
    # The longest one job's dispatch to a node may take (synchronous calls: node_timeout_seconds).
    job_node_timeout_seconds: float = Field(default=6 * 3600.0, gt=0)
    # A job not finished this long after it was submitted fails; its reservation is held as long.
    job_deadline_seconds: float = Field(default=24 * 3600.0, gt=0)
    job_max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # Longer audio (measured from its packets) is refused at submission, 413 audio_too_long,
    # before anything is stored or reserved: the nodes' own default INFERENCE_MAX_AUDIO_SECONDS.
    job_max_audio_seconds: float = Field(default=4 * 3600.0, gt=0)
    # Where uploaded audio waits until its job ends; every replica must see the same directory.
    job_storage: Literal["directory"] = "directory"
    job_storage_dir: str = "./var/job-audio"
    # How long a finished job's result stays retrievable, and how often the clean-up runs.
    job_result_retention_seconds: float = Field(default=7 * 86_400.0, gt=0)
    job_maintenance_seconds: float = Field(default=60.0, gt=0)
    # A running job's progress is estimated as elapsed / (audio seconds * this).
    job_progress_seconds_per_audio_second: float = Field(default=0.2, gt=0)
    # Webhooks: private, loopback and link-local targets are refused unless this is set.
    webhook_allow_private: bool = False
    # Webhook egress controls. Addresses refused besides the built-in ones, even with
    # webhook_allow_private (comma-separated CIDRs; an IPv4 one also covers IPv6 forms carrying
    # it). An http(s) proxy every delivery goes through: it then resolves the names and must
    # refuse internal addresses itself; the gateway judges only address literals.
    webhook_deny_cidrs: str = ""
    webhook_proxy_url: str = ""
    # The whole of one delivery: connecting, sending and the response, whose body is read up
    # to a few KiB. Deliveries one process sends at once; one tenant has one at a time.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_senders: int = Field(default=4, ge=1)
    # Attempts per webhook; retry n waits min(base * 2^(n - 1), max) seconds.
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_base_seconds: float = Field(default=5.0, ge=0)
    webhook_retry_max_seconds: float = Field(default=600.0, ge=0)

    # The web console (docs/console.md), served under /console.
    console_enabled: bool = True
    # Cookies marked Secure (sent over HTTPS only). Unset: on in production, off in development
    # so the console works over plain http on loopback.
    console_secure_cookies: bool | None = None
    # A session ends after this long without a request, and this long after sign-in at most.
    console_session_idle_seconds: int = Field(default=30 * 60, gt=0)
    console_session_max_seconds: int = Field(default=12 * 3600, gt=0)
    # Sign-in attempts per client address (an IPv4 address, an IPv6 /64) that fail (wrong
    # password, bad token, used link) before 429 with Retry-After, in the `limits` notation;
    # counted in Redis with GATEWAY_REDIS_URL.
    console_sign_in_limit: str = "5/minute"
    # Failed password sign-ins per account name (any address) before 429, a longer and looser
    # moving window that stops guesses spread over many addresses (docs/console.md).
    console_sign_in_account_limit: str = "10/15 minutes"
    # Password checks (argon2, 64 MiB each) running at once per process; a sign-in that finds
    # none free within the wait is refused (503 sign_in_busy) rather than queued.
    console_password_checks: int = Field(default=2, ge=1)
    console_password_check_wait_seconds: float = Field(default=2.0, ge=0)
    # How long a customer portal link may wait before it is opened (it opens once); also the
    # most an admin may ask for when making one (a shorter lifetime may be asked).
    console_portal_link_seconds: int = Field(default=3600, gt=0)
    # The console's public base URL (https://billing.example.com), used in portal links made
    # outside a request (the CLI); empty: the address of the gateway itself.
    console_public_url: str = ""
    # Step-up authentication: creating or rotating API keys, adding credit and creating plans
    # ask for the password (or a fresh SSO token) again unless it was given within this long.
    console_reauth_seconds: int = Field(default=300, gt=0)

    @field_validator("nodes")
    @classmethod
    def _nodes_are_urls_or_dns_names(cls, value: str) -> str:
        for entry in (entry.strip() for entry in value.split(",")):
            if entry.startswith(DNS_NODES_PREFIX):
                _check_dns_nodes_entry(entry)
            elif entry and not entry.startswith(("http://", "https://")):
                raise ValueError(
                    f"node {entry!r} must be a URL (http:// or https://) or a DNS name "
                    f"({DNS_NODES_PREFIX}http://NAME:PORT)"
                )
        return value

    @field_validator("node_allowed_hosts")
    @classmethod
    def _allowed_hosts_parse(cls, value: str) -> str:
        for entry in (entry.strip() for entry in value.split(",")):
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as error:
                    raise ValueError(f"GATEWAY_NODE_ALLOWED_HOSTS: {error}") from None
        return value

    @field_validator("webhook_deny_cidrs")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        _networks(value)
        return value

    @field_validator("webhook_proxy_url")
    @classmethod
    def _proxy_is_a_url(cls, value: str) -> str:
        if value and not (value.startswith(("http://", "https://")) and urlsplit(value).hostname):
            raise ValueError(f"webhook proxy {value!r} must be an http:// or https:// URL")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_or_networks(cls, value: str) -> str:
        for entry in (entry.strip() for entry in value.split(",")):
            try:
                if entry:
                    ipaddress.ip_network(entry)
            except ValueError:
                raise ValueError(
                    f"trusted proxy {entry!r} is not an IP address or network (10.0.0.0/8)"
                ) from None
        return value

    @field_validator(
        "console_sign_in_limit", "console_sign_in_account_limit", "api_key_failure_limit"
    )
    @classmethod
    def _limits_notation(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a limit like 5/minute or 10/15 minutes") from None
        return value

    @field_validator("admin_jwks_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: str) -> str:
        for algorithm in value.split(","):
            if algorithm.strip() not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(
                    f"JWKS algorithm {algorithm.strip()!r} is not one of {ASYMMETRIC_ALGORITHMS}"
                )
        return value

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> GatewaySettings:
        if self.environment == "production":
            if self.admin_jwt_secret == DEFAULT_ADMIN_JWT_SECRET:
                raise ValueError(
                    "GATEWAY_ADMIN_JWT_SECRET is the built-in default; set a secret of your own "
                    "(or an empty one to accept only JWKS-signed tokens) in production"
                )
            if self.admin_jwt_secret and len(self.admin_jwt_secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"GATEWAY_ADMIN_JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters"
                )
            if len(self.node_secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"GATEWAY_NODE_SECRET must be set, at least {MIN_SECRET_LENGTH} characters, "
                    "in production: the nodes' INFERENCE_NODE_SECRET"
                )
        if not self.admin_jwt_secret and not self.admin_jwks_url:
            raise ValueError(
                "the admin API needs GATEWAY_ADMIN_JWT_SECRET or GATEWAY_ADMIN_JWKS_URL"
            )
        return self

    def unsafe_to_bind(self, host: str) -> list[str]:
        """Why the gateway must not listen on ``host``: on an address others can reach, the
        built-in admin secret lets anyone mint owner tokens, and an empty node secret means the
        nodes accept anyone."""
        if is_loopback_host(host):
            return []
        problems = []
        if self.admin_jwt_secret == DEFAULT_ADMIN_JWT_SECRET:
            problems.append(
                "GATEWAY_ADMIN_JWT_SECRET is the built-in development secret: set one of your "
                f"own ({MIN_SECRET_LENGTH}+ characters), or an empty one with "
                "GATEWAY_ADMIN_JWKS_URL"
            )
        if not self.node_secret:
            problems.append(
                "GATEWAY_NODE_SECRET is empty: set the secret the nodes require "
                "(their INFERENCE_NODE_SECRET)"
            )
        return problems

    @property
    def console_cookie_secure(self) -> bool:
        if self.console_secure_cookies is not None:
            return self.console_secure_cookies
        return self.environment == "production"

    @property
    def trusted_proxies(self) -> list[str]:
        """GATEWAY_FORWARDED_ALLOW_IPS as uvicorn's ``forwarded_allow_ips`` takes it."""
        return [entry.strip() for entry in self.forwarded_allow_ips.split(",") if entry.strip()]

    @property
    def admin_jwks_algorithm_list(self) -> list[str]:
        return [algorithm.strip() for algorithm in self.admin_jwks_algorithms.split(",")]

    @property
    def node_urls(self) -> list[str]:
        """The node URLs of GATEWAY_NODES (its DNS names aside)."""
        entries = (entry.strip() for entry in self.nodes.split(","))
        return [
            entry.rstrip("/")
            for entry in entries
            if entry and not entry.startswith(DNS_NODES_PREFIX)
        ]

    @property
    def webhook_deny_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return _networks(self.webhook_deny_cidrs)

    @property
    def node_dns_entries(self) -> list[str]:
        """The ``dns+http://NAME:PORT`` entries of GATEWAY_NODES."""
        entries = (entry.strip() for entry in self.nodes.split(","))
        return [entry for entry in entries if entry.startswith(DNS_NODES_PREFIX)]


def _check_dns_nodes_entry(entry: str) -> None:
    try:
        url = httpx.URL(entry.removeprefix(DNS_NODES_PREFIX))
    except httpx.InvalidURL as error:
        raise ValueError(f"node DNS name {entry!r} is not a URL: {error}") from None
    if url.scheme != "http":
        # The nodes are reached by address, which a TLS certificate does not name.
        raise ValueError(
            f"node DNS name {entry!r} must be {DNS_NODES_PREFIX}http://NAME:PORT: nodes found "
            "through DNS are reached at their addresses, over plain HTTP"
        )
    if not url.host:
        raise ValueError(f"node DNS name {entry!r} names no host")


def _networks(cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        # Host bits are forgiven: 10.1.2.3/8 means 10.0.0.0/8.
        return [
            ipaddress.ip_network(cidr.strip(), strict=False)
            for cidr in cidrs.split(",")
            if cidr.strip()
        ]
    except ValueError as error:
        raise ValueError(f"webhook deny CIDRs: {error}") from None
