"""Money arithmetic: integers only.

Prices are integer micro-units of the plan's currency per 1,000 output tokens. The cost of one
request is ``output_tokens * price_per_1k_tokens_micros / 1000`` rounded half up to a whole
micro-unit, once, per request. Every total (usage report, invoice) is the plain integer sum of
per-request costs, so totals reconcile exactly with the ledger rows.
"""

from __future__ import annotations

from decimal import Decimal

MICROS_PER_UNIT = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000


def cost_micros(output_tokens: int, price_per_1k_tokens_micros: int) -> int:
    """Cost of one request in integer micro-units (round half up)."""
    if output_tokens < 0 or price_per_1k_tokens_micros < 0:
        raise ValueError("tokens and prices are never negative")
    numerator = output_tokens * price_per_1k_tokens_micros
    return (numerator + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT


def format_micros(amount_micros: int, currency: str) -> str:
    """``1234567, "USD"`` → ``"1.234567 USD"``: exact, for tables and reports."""
    units = Decimal(amount_micros) / MICROS_PER_UNIT
    return f"{units:.6f} {currency}"
