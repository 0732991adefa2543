from __future__ import annotations

import pytest

from billing.money import cost_micros, format_micros


class TestCostMicros:
    @pytest.mark.parametrize(
        ("tokens", "price", "expected"),
        [
            (0, 20_000, 0),
            (1_000, 20_000, 20_000),
            (21, 20_000, 420),
            (1, 499, 0),  # 0.499 rounds down
            (1, 500, 1),  # 0.5 rounds half up
            (1, 1_500, 2),  # 1.5 rounds half up
            (3, 333, 1),  # 0.999
            (10**12, 10**9, 10**18),  # big integers stay exact
        ],
    )
    def test_rounds_half_up_to_whole_micros(self, tokens: int, price: int, expected: int) -> None:
        assert cost_micros(tokens, price) == expected

    def test_refuses_negative_values(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            cost_micros(-1, 100)


def test_format_micros_is_exact() -> None:
    assert format_micros(1_234_567, "USD") == "1.234567 USD"
    assert format_micros(5, "EUR") == "0.000005 EUR"
