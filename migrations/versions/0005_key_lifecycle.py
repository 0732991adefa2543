"""Key lifecycle: per-key scopes and allowed models, and the key a rotation replaced.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as keys:
        keys.add_column(sa.Column("scopes", sa.String(200), nullable=True))
        keys.add_column(sa.Column("allowed_models", sa.Text(), nullable=True))
        keys.add_column(sa.Column("rotated_from_id", sa.Integer(), nullable=True))
        keys.create_foreign_key(
            "fk_api_keys_rotated_from_id", "api_keys", ["rotated_from_id"], ["id"],
            ondelete="RESTRICT",
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as keys:
        keys.drop_constraint("fk_api_keys_rotated_from_id", type_="foreignkey")
        keys.drop_column("rotated_from_id")
        keys.drop_column("allowed_models")
        keys.drop_column("scopes")
