"""An invoice as a PDF (fpdf2) and as CSV, both drawn from the same ``InvoicePublic`` the admin
API returns as JSON, so every line and amount is the same in all three.

Amounts are integer micro-units written out exactly (``billing.money``): 1240 micro-USD is
``0.001240``; nothing is rounded on the way.
"""

from __future__ import annotations

import csv
import io

from billing.invoices.schemas import InvoicePublic
from gateway.console.views import moment, units

# Column widths in mm on A4 (190 mm between the margins).
COLUMNS = (
    ("Kind", 24, "L"),
    ("Model", 52, "L"),
    ("API key", 30, "L"),
    ("Requests", 22, "R"),
    ("Tokens", 24, "R"),
    ("Amount", 38, "R"),
)
ROW_MM = 7


def _latin1(text: str) -> str:
    # The PDF core fonts cover Latin-1; anything else shows as '?'.
    return text.encode("latin-1", "replace").decode("latin-1")


def invoice_pdf(invoice: InvoicePublic, issuer: str = "asr-billing-gateway") -> bytes:
    # Imported here: fpdf2 pulls in Pillow and numpy, which the gateway's start-up (and its
    # torch-free install check) should not pay for until someone downloads an invoice.
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Invoice {invoice.tenant} {invoice.period}"))
    pdf.set_author(_latin1(issuer))
    pdf.set_creator(_latin1(issuer))
    pdf.set_margins(10, 12, 10)
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=18)
    pdf.cell(0, 10, "Invoice", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    details = [
        ("Customer", invoice.tenant),
        ("Period", f"{invoice.period} (UTC calendar month)"),
        ("State", invoice.state),
        ("Created", moment(invoice.created_at)),
        ("Finalized", moment(invoice.finalized_at) if invoice.finalized_at else "not yet (draft)"),
        ("Currency", invoice.currency),
    ]
    for label, value in details:
        pdf.cell(30, 6, f"{label}:")
        pdf.cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", style="B", size=10)
    for title, width, align in COLUMNS:
        label = f"{title} ({invoice.currency})" if title == "Amount" else title
        pdf.cell(width, ROW_MM, label, border="B", align=align)
    pdf.ln(ROW_MM)
    pdf.set_font("Helvetica", size=10)
    for line in invoice.lines:
        cells = (
            line.kind,
            line.model,
            line.api_key_prefix,
            str(line.requests),
            str(line.billed_tokens),
            units(line.amount_micros),
        )
        for text, (_title, width, align) in zip(cells, COLUMNS, strict=True):
            pdf.cell(width, ROW_MM, _latin1(text), align=align)
        pdf.ln(ROW_MM)
    if not invoice.lines:
        pdf.cell(0, ROW_MM, "No usage in this period.", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", style="B", size=11)
    label_width = sum(width for _title, width, _align in COLUMNS[:-1])
    pdf.cell(label_width, ROW_MM + 1, "Total", border="T")
    pdf.cell(
        COLUMNS[-1][1],
        ROW_MM + 1,
        f"{units(invoice.total_micros)} {invoice.currency}",
        border="T",
        align="R",
    )
    pdf.ln(ROW_MM + 4)
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(
        0,
        4,
        f"Total in micro-units: {invoice.total_micros}. Each amount is the exact sum of "
        f"per-request costs in micro-units of {invoice.currency} (1,000,000 per unit), each "
        "rounded once when the request was billed; nothing is rounded on this invoice.",
    )
    return bytes(pdf.output())


def invoice_csv(invoice: InvoicePublic) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "tenant",
            "period",
            "kind",
            "model",
            "api_key_prefix",
            "requests",
            "billed_tokens",
            "amount_micros",
            "amount",
            "currency",
        ]
    )
    for line in invoice.lines:
        writer.writerow(
            [
                invoice.tenant,
                invoice.period,
                line.kind,
                line.model,
                line.api_key_prefix,
                line.requests,
                line.billed_tokens,
                line.amount_micros,
                units(line.amount_micros),
                invoice.currency,
            ]
        )
    writer.writerow(
        [
            invoice.tenant,
            invoice.period,
            "total",
            "",
            "",
            sum(line.requests for line in invoice.lines),
            sum(line.billed_tokens for line in invoice.lines),
            invoice.total_micros,
            units(invoice.total_micros),
            invoice.currency,
        ]
    )
    return buffer.getvalue()
