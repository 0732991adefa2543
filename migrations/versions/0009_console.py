"""The web console: admin users, console sessions (admin and customer portal) and single-use
portal links.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing.models.types import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("password_changed_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("username", name="uq_admin_users_username"),
        sa.CheckConstraint("role IN ('owner', 'operator', 'finance')", name="role"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column(
            "admin_user_id",
            sa.Integer(),
            sa.ForeignKey(
                "admin_users.id", name="fk_console_sessions_admin_user_id", ondelete="CASCADE"
            ),
            nullable=True,
        ),
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_console_sessions_tenant_id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("scopes", sa.String(400), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_console_sessions_token_hash"),
        sa.CheckConstraint("kind IN ('admin', 'portal')", name="kind"),
        sa.CheckConstraint(
            "(kind = 'portal') = (tenant_id IS NOT NULL)",
            name="portal_has_tenant",
        ),
    )
    op.create_index("ix_console_sessions_admin_user_id", "console_sessions", ["admin_user_id"])
    op.create_index("ix_console_sessions_tenant_id", "console_sessions", ["tenant_id"])
    op.create_table(
        "portal_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_portal_links_tenant_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_portal_links_token_hash"),
    )
    op.create_index("ix_portal_links_tenant_id", "portal_links", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_portal_links_tenant_id", table_name="portal_links")
    op.drop_table("portal_links")
    op.drop_index("ix_console_sessions_tenant_id", table_name="console_sessions")
    op.drop_index("ix_console_sessions_admin_user_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("admin_users")
