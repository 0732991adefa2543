"""Console sessions remember the browser that holds them and when its user last proved who they
are: the user agent (for the list of one's own sessions) and the last re-authentication (for
the password asked again before keys, credit and plans are changed).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing.models.types import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("console_sessions", sa.Column("user_agent", sa.String(300), nullable=True))
    op.add_column("console_sessions", sa.Column("reauthenticated_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_column("reauthenticated_at")
        batch.drop_column("user_agent")
