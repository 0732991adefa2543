"""Credits, quotas and reservations: plan limits, prepaid tenants, tenant accounts and periods,
credit entries, reservations, idempotency records, billed tokens on usage rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing.models.types import BigIntPK, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as plans:
        plans.add_column(sa.Column("monthly_token_quota", sa.BigInteger(), nullable=True))
        plans.add_column(sa.Column("requests_per_minute", sa.Integer(), nullable=True))
        plans.add_column(sa.Column("concurrency_limit", sa.Integer(), nullable=True))
        plans.add_column(
            sa.Column(
                "max_tokens_per_audio_second",
                sa.Integer(),
                nullable=False,
                server_default=sa.text("50"),
            )
        )
        plans.add_column(
            sa.Column(
                "cache_hit_price_bp", sa.Integer(), nullable=False, server_default=sa.text("0")
            )
        )
        plans.create_check_constraint("token_bound_positive", "max_tokens_per_audio_second > 0")
        plans.create_check_constraint(
            "cache_hit_price_bp", "cache_hit_price_bp BETWEEN 0 AND 10000"
        )
    with op.batch_alter_table("tenants") as tenants:
        tenants.add_column(
            sa.Column("prepaid", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    op.add_column("usage_events", sa.Column("billed_tokens", sa.BigInteger(), nullable=True))
    op.execute("UPDATE usage_events SET billed_tokens = output_tokens")
    with op.batch_alter_table("usage_events") as usage:
        usage.alter_column("billed_tokens", existing_type=sa.BigInteger(), nullable=False)
        usage.drop_constraint(op.f("ck_usage_events_nonnegative"), type_="check")
        usage.create_check_constraint(
            "nonnegative",
            "audio_ms >= 0 AND output_tokens >= 0 AND billed_tokens >= 0 AND cost_micros >= 0",
        )

    op.create_table(
        "tenant_accounts",
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_tenant_accounts_tenant_id", ondelete="RESTRICT"),
            primary_key=True,
        ),
        sa.Column("credit_micros", sa.BigInteger(), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("spent_micros >= 0 AND reserved_micros >= 0", name="nonnegative"),
    )
    # Every existing tenant gets its account, with what it has spent so far.
    op.execute(
        "INSERT INTO tenant_accounts (tenant_id, credit_micros, spent_micros, reserved_micros,"
        " updated_at) SELECT t.id, 0, COALESCE((SELECT SUM(u.cost_micros) FROM usage_events u"
        " WHERE u.tenant_id = t.id), 0), 0, t.created_at FROM tenants t"
    )
    op.create_table(
        "tenant_periods",
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_tenant_periods_tenant_id", ondelete="RESTRICT"),
            primary_key=True,
        ),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("tokens_used", sa.BigInteger(), nullable=False),
        sa.Column("tokens_reserved", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "credit_entries",
        sa.Column("id", BigIntPK, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_credit_entries_tenant_id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_credit_entries_idempotency"),
        sa.CheckConstraint("kind IN ('topup', 'adjustment')", name="kind"),
        sa.CheckConstraint("kind <> 'topup' OR amount_micros > 0", name="topup_positive"),
    )
    op.create_index("ix_credit_entries_tenant_id", "credit_entries", ["tenant_id"])
    op.create_table(
        "reservations",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_reservations_tenant_id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column(
            "api_key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", name="fk_reservations_api_key_id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("state IN ('open', 'settled', 'released')", name="state"),
        sa.CheckConstraint("amount_micros >= 0 AND tokens >= 0", name="nonnegative"),
    )
    op.create_index("ix_reservations_tenant_id", "reservations", ["tenant_id"])
    op.create_index("ix_reservations_state", "reservations", ["state"])
    op.create_index("ix_reservations_expires_at", "reservations", ["expires_at"])
    op.create_table(
        "idempotency_records",
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey(
                "tenants.id", name="fk_idempotency_records_tenant_id", ondelete="RESTRICT"
            ),
            primary_key=True,
        ),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("media_type", sa.String(100), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idempotency_records")
    op.drop_index("ix_reservations_expires_at", table_name="reservations")
    op.drop_index("ix_reservations_state", table_name="reservations")
    op.drop_index("ix_reservations_tenant_id", table_name="reservations")
    op.drop_table("reservations")
    op.drop_index("ix_credit_entries_tenant_id", table_name="credit_entries")
    op.drop_table("credit_entries")
    op.drop_table("tenant_periods")
    op.drop_table("tenant_accounts")
    with op.batch_alter_table("usage_events") as usage:
        usage.drop_constraint(op.f("ck_usage_events_nonnegative"), type_="check")
        usage.create_check_constraint(
            "nonnegative", "audio_ms >= 0 AND output_tokens >= 0 AND cost_micros >= 0"
        )
        usage.drop_column("billed_tokens")
    with op.batch_alter_table("tenants") as tenants:
        tenants.drop_column("prepaid")
    with op.batch_alter_table("plans") as plans:
        plans.drop_constraint(op.f("ck_plans_cache_hit_price_bp"), type_="check")
        plans.drop_constraint(op.f("ck_plans_token_bound_positive"), type_="check")
        plans.drop_column("cache_hit_price_bp")
        plans.drop_column("max_tokens_per_audio_second")
        plans.drop_column("concurrency_limit")
        plans.drop_column("requests_per_minute")
        plans.drop_column("monthly_token_quota")
