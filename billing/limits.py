"""The largest values the billing records take, and why.

Every bound keeps a value inside what its column or ``datetime`` can hold with room to spare
for the sums built from it (integer micro-units in 64-bit columns), and inside what makes
business sense. The admin API's request schemas use these constants as ``Field`` limits; the
services check them too, so the CLI and the console fail as cleanly as the HTTP API.
"""

from __future__ import annotations

from billing.errors import InvalidValue

# A key lives at most a century; ``datetime`` would overflow past the year 9999.
MAX_KEY_LIFETIME_DAYS = 36_500
# A rotated key overlaps with its successor for at most 90 days.
MAX_ROTATION_GRACE_SECONDS = 90 * 86_400
# 100 units of the currency per 1,000 tokens: 5,000 times the default price. With the token
# bound below, a 24-hour recording costs at most 8.64e12 micros, so a month's sums stay far
# inside a signed 64-bit column.
MAX_PRICE_PER_1K_TOKENS_MICROS = 100_000_000
# Speech yields some 15 characters a second; 1,000 bounds any transcript with a wide margin.
MAX_TOKENS_PER_AUDIO_SECOND = 1_000
MAX_MONTHLY_TOKEN_QUOTA = 1_000_000_000_000
MAX_REQUESTS_PER_MINUTE = 1_000_000
MAX_CONCURRENCY_LIMIT = 100_000
MAX_CACHE_HIT_PRICE_BP = 10_000
# One credit entry moves at most a million units of the currency, either way.
MAX_CREDIT_MICROS = 1_000_000_000_000
# The columns' widths.
MAX_TENANT_NAME_LENGTH = 128
MAX_PLAN_NAME_LENGTH = 64
MAX_KEY_NAME_LENGTH = 128
MAX_MODEL_NAME_LENGTH = 128
MAX_ALLOWED_MODELS = 64
MAX_IDEMPOTENCY_KEY_LENGTH = 128
MAX_NOTE_LENGTH = 500
# A 64-bit row id.
MAX_ROW_ID = 2**63 - 1


def check_range(label: str, value: int, low: int, high: int) -> None:
    """``InvalidValue`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise InvalidValue(f"{label} must be between {low:,} and {high:,}, not {value:,}")


def check_length(label: str, value: str, high: int) -> None:
    if len(value) > high:
        raise InvalidValue(f"{label} is longer than {high} characters")
