"""Gateway settings (env prefix ``GATEWAY_``)."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# What the official SDKs send by default; served by the gateway's default model.
OPENAI_MODEL_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # Comma-separated base URLs of inference nodes.
    nodes: str = "http://127.0.0.1:8001"
    node_secret: str = ""
    # The model OpenAI aliases (whisper-1, …) and requests without a known model resolve to.
    default_model: str = "pocketsphinx-en"
    max_upload_bytes: int = 25 * 1024 * 1024
    node_connect_timeout_seconds: float = 5.0
    node_timeout_seconds: float = 600.0
    # How long past the node timeout a reservation may stay open before the sweeper frees it,
    # and how often the sweeper looks.
    reservation_margin_seconds: float = 60.0
    reservation_sweep_seconds: float = 30.0
    # Apply the ledger migrations on start (the embedded default); off where a deploy job does it.
    migrate_on_start: bool = True

    @field_validator("nodes")
    @classmethod
    def _nodes_are_urls(cls, value: str) -> str:
        for url in value.split(","):
            if url.strip() and not url.strip().startswith(("http://", "https://")):
                raise ValueError(f"node URL {url!r} must start with http:// or https://")
        return value

    @property
    def node_urls(self) -> list[str]:
        return [url.strip().rstrip("/") for url in self.nodes.split(",") if url.strip()]
