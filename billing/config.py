"""Billing settings (env prefix ``BILLING_``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/asrgw.db"


class BillingSettings(BaseSettings):
    """Where the ledger lives. SQLite under ``./var`` needs nothing; PostgreSQL scales out."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    echo_sql: bool = False
