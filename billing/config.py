"""Billing settings (env prefix ``BILLING_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/asrgw.db"


class BillingSettings(BaseSettings):
    """Where the ledger lives. SQLite under ``./var`` needs nothing; PostgreSQL scales out."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    echo_sql: bool = False
    # SQLite: how long a write waits for another writer's lock before the request is refused
    # with 503 ledger_unavailable (the gateway) or the command fails (the CLI).
    sqlite_busy_timeout_seconds: float = Field(default=30.0, gt=0)
