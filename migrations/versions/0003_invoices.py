"""Invoices (monthly drafts and finalized bills, their lines, which usage row is on which) and
the charges the gateway returned to clients, for reconciliation.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing.models.types import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_invoices_tenant_id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_micros", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finalized_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("tenant_id", "period", name="uq_invoices_tenant_period"),
        sa.CheckConstraint("state IN ('draft', 'finalized')", name="state"),
    )
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "invoice_id",
            sa.Integer(),
            sa.ForeignKey("invoices.id", name="fk_invoice_lines_invoice_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("api_key_prefix", sa.String(16), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("billed_tokens", sa.BigInteger(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('usage', 'adjustment')", name="kind"),
    )
    op.create_index("ix_invoice_lines_invoice_id", "invoice_lines", ["invoice_id"])
    op.create_table(
        "invoice_items",
        sa.Column(
            "usage_event_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "usage_events.id", name="fk_invoice_items_usage_event_id", ondelete="RESTRICT"
            ),
            primary_key=True,
        ),
        sa.Column(
            "invoice_id",
            sa.Integer(),
            sa.ForeignKey("invoices.id", name="fk_invoice_items_invoice_id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_index("ix_invoice_items_invoice_id", "invoice_items", ["invoice_id"])
    op.create_table(
        "returned_charges",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", name="fk_returned_charges_tenant_id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("billed_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_returned_charges_tenant_id", "returned_charges", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_returned_charges_tenant_id", table_name="returned_charges")
    op.drop_table("returned_charges")
    op.drop_index("ix_invoice_items_invoice_id", table_name="invoice_items")
    op.drop_table("invoice_items")
    op.drop_index("ix_invoice_lines_invoice_id", table_name="invoice_lines")
    op.drop_table("invoice_lines")
    op.drop_table("invoices")
