"""What a billed response tells the client about its cost."""

from __future__ import annotations

from typing import Any, NamedTuple

from starlette.responses import Response

from billing.usage.schemas import BillableTranscription, UsageCharge
from inference.protocol import TranscriptionResult

REPLAYED_HEADER = "idempotent-replayed"


def usage_body(charge: UsageCharge) -> dict[str, Any]:
    """The ``usage`` object of a JSON body: OpenAI's token usage plus audio seconds and cost."""
    return {
        "type": "tokens",
        "input_tokens": 0,
        "output_tokens": charge.billed_tokens,
        "total_tokens": charge.billed_tokens,
        "seconds": charge.audio_ms / 1000,
        "token_unit": charge.token_unit,
        "cost_micros": charge.cost_micros,
        "currency": charge.currency,
    }


def charge_headers(charge: UsageCharge, *, cached: bool) -> dict[str, str]:
    """``x-billing-*`` (the ledger row's numbers and request id) and ``x-cache``."""
    return {
        "x-billing-output-tokens": str(charge.billed_tokens),
        "x-billing-cost-micros": str(charge.cost_micros),
        "x-billing-currency": charge.currency,
        "x-billing-request-id": charge.request_id,
        "x-cache": "hit" if cached else "miss",
    }


def partial_result(billable: BillableTranscription) -> TranscriptionResult:
    """The stored result of a stream billed for the text it sent before it was cut short."""
    return TranscriptionResult(
        text=billable.transcript,
        language="",
        duration=billable.audio_ms / 1000,
        segments=[],
        model=billable.model,
        processing_ms=0,
    )


class ToldCharge(NamedTuple):
    request_id: str
    billed_tokens: int
    cost_micros: int


def told_charge(response: Response) -> ToldCharge | None:
    """The charge a built response tells its client, read back from its own headers."""
    headers = response.headers
    try:
        return ToldCharge(
            headers["x-billing-request-id"],
            int(headers["x-billing-output-tokens"]),
            int(headers["x-billing-cost-micros"]),
        )
    except (KeyError, ValueError):
        return None
