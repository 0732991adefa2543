"""Invoice PDF and CSV drawn from the invoice's JSON shape."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

from billing.invoices.schemas import InvoiceLinePublic, InvoicePublic
from gateway.console.invoice_files import invoice_csv, invoice_pdf
from tests.fixtures.environment import require_tool


def draft(tenant: str) -> InvoicePublic:
    return InvoicePublic(
        tenant=tenant,
        period="2026-11",
        state="draft",
        currency="EUR",
        total_micros=1_000_001,
        created_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        finalized_at=None,
        lines=[
            InvoiceLinePublic(
                kind="usage",
                model="paraformer-zh",
                api_key_prefix="0123456789ab",
                requests=3,
                billed_tokens=50,
                amount_micros=1_000_000,
            ),
            InvoiceLinePublic(
                kind="adjustment",
                model="paraformer-zh",
                api_key_prefix="0123456789ab",
                requests=1,
                billed_tokens=1,
                amount_micros=1,
            ),
        ],
    )


def test_a_draft_for_a_tenant_named_outside_latin_1() -> None:
    require_tool("pdftotext")
    invoice = draft("Café 东京")
    text = subprocess.run(
        ["pdftotext", "-layout", "-", "-"],
        input=invoice_pdf(invoice),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "Café ??" in text  # the core fonts' Latin-1; the CSV keeps every character
    assert "not yet (draft)" in text
    assert "1.000000" in text
    assert "0.000001" in text
    assert "1.000001 EUR" in text
    rows = invoice_csv(invoice).splitlines()
    assert rows[1].startswith("Café 东京,2026-11,usage,paraformer-zh,0123456789ab,3,50,1000000,")
    assert rows[-1] == "Café 东京,2026-11,total,,,4,51,1000001,1.000001,EUR"
