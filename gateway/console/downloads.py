"""File responses of the console: invoice PDF and CSV, usage CSV."""

from __future__ import annotations

from fastapi.responses import Response

from billing.invoices.schemas import InvoicePublic
from gateway.console.invoice_files import invoice_csv, invoice_pdf


def attachment(body: bytes | str, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def _stem(invoice: InvoicePublic) -> str:
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in invoice.tenant)
    return f"invoice-{safe}-{invoice.period}"


def invoice_pdf_response(invoice: InvoicePublic) -> Response:
    return attachment(invoice_pdf(invoice), "application/pdf", f"{_stem(invoice)}.pdf")


def invoice_csv_response(invoice: InvoicePublic) -> Response:
    return attachment(invoice_csv(invoice), "text/csv; charset=utf-8", f"{_stem(invoice)}.csv")
