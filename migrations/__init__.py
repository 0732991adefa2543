"""Alembic migration history of the ledger database (one history for the whole product)."""
