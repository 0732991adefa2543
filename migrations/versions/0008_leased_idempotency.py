"""Leased idempotency keys with results replayable from the ledger.

An ``Idempotency-Key`` claim now holds a lease (token and expiry, renewed while its request
runs) that a retry takes over once it lapses, and the settlement stores the request's canonical
result on the record in the transaction that writes the usage row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing.models.types import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_records") as records:
        records.add_column(sa.Column("lease_token", sa.String(32), nullable=True))
        records.add_column(sa.Column("lease_expires_at", UTCDateTime(), nullable=True))
        records.add_column(sa.Column("result", sa.Text(), nullable=True))
        records.add_column(sa.Column("completed_at", UTCDateTime(), nullable=True))
        records.create_index("ix_idempotency_records_created_at", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("idempotency_records") as records:
        records.drop_index("ix_idempotency_records_created_at")
        records.drop_column("completed_at")
        records.drop_column("result")
        records.drop_column("lease_expires_at")
        records.drop_column("lease_token")
