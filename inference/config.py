"""Node settings (env prefix ``INFERENCE_``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS = "pocketsphinx-en"


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8001
    # Comma-separated entries `NAME` or `NAME=SOURCE`. Names starting with `pocketsphinx` use
    # PocketSphinx; every other name is a FunASR model whose SOURCE (a hub name or a local
    # directory) defaults to NAME. The first entry is the default model.
    models: str = DEFAULT_MODELS
    device: str = "auto"
    hub: str = "ms"
    # Bearer secret the gateway must present; empty accepts any caller (loopback development).
    node_secret: str = ""
    max_upload_bytes: int = 100 * 1024 * 1024
