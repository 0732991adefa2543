"""Client tokens: short-lived, single-use stand-ins for an API key on browser WebSockets.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing.models.types import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_secrets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "api_key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", name="fk_client_secrets_api_key_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_client_secrets_token_hash"),
    )
    op.create_index("ix_client_secrets_api_key_id", "client_secrets", ["api_key_id"])
    op.create_index("ix_client_secrets_expires_at", "client_secrets", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_client_secrets_expires_at", table_name="client_secrets")
    op.drop_index("ix_client_secrets_api_key_id", table_name="client_secrets")
    op.drop_table("client_secrets")
