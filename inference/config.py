"""Node settings (env prefix ``INFERENCE_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.addresses import is_loopback_host

# The shortest node secret production accepts (the gateway's admin secret has the same floor).
MIN_NODE_SECRET_LENGTH = 32

# Whisper tiny.en from a pinned PyPI package: good English on a CPU with no network.
DEFAULT_MODELS = "whisper-tiny.en"


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8001
    # How long an idle connection stays open for the next request: longer than the gateway
    # reuses one (GATEWAY_NODE_IDLE_CONNECTION_SECONDS), so the node never closes a connection
    # a gateway is sending on.
    keep_alive_seconds: int = Field(default=75, ge=1)
    # Comma-separated entries `NAME` or `NAME=SOURCE`; the first entry is the default model.
    # `pocketsphinx*` is PocketSphinx. `whisper-*` is faster-whisper: whisper-tiny(.en),
    # -base(.en), -small(.en), -medium(.en), -large-v3 and -turbo are fetched from the Hugging
    # Face hub, except whisper-tiny.en, which ships with the node; SOURCE may be a CTranslate2
    # model directory or a hub repository. Every other name is a FunASR model whose SOURCE (a
    # hub name or a local directory) defaults to NAME.
    models: str = DEFAULT_MODELS
    # cpu, cuda, cuda:N or auto (CUDA when a GPU is visible).
    device: str = "auto"
    # CPU threads per model (CTranslate2's intra-op threads, FunASR's ncpu); 0 means one per core.
    threads: int = Field(default=0, ge=0)
    # FunASR's model hub: ms (ModelScope) or hf (Hugging Face).
    hub: str = "ms"
    # faster-whisper: CTranslate2 compute type; auto is int8 on the CPU and float16 on CUDA.
    whisper_compute_type: str = "auto"
    # Beam width at temperature 0, and candidates drawn per sampled decode at temperature > 0.
    whisper_beam_size: int = Field(default=5, ge=1, le=16)
    whisper_best_of: int = Field(default=5, ge=1, le=16)
    # Tokens decoded per 30 s window at most (the prompt not counted); 0 is Whisper's own limit
    # (448 with the prompt). A cap bounds the GPU time a hallucination loop can take: 30 s of
    # fast speech is about 150 tokens. At most 216, so that the longest prompt (about 230
    # tokens of earlier text) still fits under Whisper's limit.
    whisper_max_new_tokens: int = Field(default=0, ge=0, le=216)
    # Where hub models are cached (default: the Hugging Face cache, ~/.cache/huggingface).
    whisper_download_root: str = ""
    # Bearer secret the gateway must present; empty accepts any caller, which is allowed only
    # on a loopback address in development (docs/node.md#the-node-secret).
    node_secret: str = ""
    # "development" (the embedded default) or "production", which requires a node secret of at
    # least MIN_NODE_SECRET_LENGTH characters whatever the address (the images set it).
    environment: Literal["development", "production"] = "development"
    # /metrics requires "Authorization: Bearer <this>" when set; empty leaves it open.
    metrics_token: str = ""
    max_upload_bytes: int = 1024 * 1024 * 1024
    # Micro-batching: concurrent compatible items are grouped into one engine call, up to
    # max_batch items or max_wait_ms after the first one arrived.
    max_batch: int = Field(default=16, ge=1, le=256)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    # A batch is padded to its longest item: at most this many padded seconds per engine call,
    # and only items at least min_batch_fill as long as the longest share a batch. Neither
    # applies to Whisper, which pads every item to its 30 s window: max_batch bounds it alone.
    max_batch_audio_seconds: float = Field(default=120.0, gt=0)
    min_batch_fill: float = Field(default=0.7, ge=0, le=1)
    # Requests admitted per model (queued or running); the next one gets 503 node_overloaded.
    max_queue: int = Field(default=64, ge=1)
    # Live streams open at once per online model; the next one is refused as node_overloaded.
    max_streams: int = Field(default=16, ge=1)
    # Graceful shutdown (inference/shutdown.py): after SIGTERM, work is still taken this long
    # while /health/ready is already red …
    shutdown_delay_seconds: float = Field(default=0.0, ge=0)
    # … and admitted requests get this long from SIGTERM to finish before they are cancelled.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # Audio longer than this is refused with 413 audio_too_long.
    max_audio_seconds: float = Field(default=4 * 3600, gt=0)
    # Audio longer than this is cut by voice activity detection into spans of at most as long.
    max_segment_seconds: float = Field(default=20.0, gt=1)
    # On CUDA, return cached blocks to the driver after a batch covering this much audio.
    empty_cache_after_audio_seconds: float = 120.0

    @model_validator(mode="after")
    def _a_node_secret_in_production(self) -> InferenceSettings:
        if self.environment == "production" and len(self.node_secret) < MIN_NODE_SECRET_LENGTH:
            raise ValueError(
                "INFERENCE_NODE_SECRET must be set, at least "
                f"{MIN_NODE_SECRET_LENGTH} characters, in production "
                "(INFERENCE_ENVIRONMENT=production); the gateways send it as GATEWAY_NODE_SECRET"
            )
        return self

    def unsafe_to_bind(self, host: str) -> list[str]:
        """Why the node must not listen on ``host``: with no secret, anyone who reaches a
        non-loopback address could use it (and its GPU) without paying."""
        if is_loopback_host(host) or self.node_secret:
            return []
        return [
            "INFERENCE_NODE_SECRET is empty: set a secret (32+ characters; the gateways send it "
            "as GATEWAY_NODE_SECRET) to listen on an address other than loopback"
        ]
