"""Money properties: totals are sums of integer rows, whatever the prices and counts; and no
floating-point type stands anywhere in the money path."""

from __future__ import annotations

import typing

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Float, Numeric
from sqlmodel import SQLModel

import billing.models
from billing.money import cost_micros

prices = st.integers(min_value=0, max_value=10**9)
token_counts = st.integers(min_value=0, max_value=10**7)


@given(st.lists(st.tuples(token_counts, prices), max_size=200))
def test_a_total_is_the_exact_sum_of_its_rows(rows: list[tuple[int, int]]) -> None:
    costs = [cost_micros(tokens, price) for tokens, price in rows]
    assert all(isinstance(cost, int) for cost in costs)
    # Rounding happens once per row; the total adds integers and never rounds again.
    assert sum(costs) == sum((tokens * price + 500) // 1000 for tokens, price in rows)


@given(token_counts, prices)
def test_rounding_is_half_up_and_within_half_a_micro(tokens: int, price: int) -> None:
    exact_thousandths = tokens * price
    cost = cost_micros(tokens, price)
    assert 2 * abs(cost * 1000 - exact_thousandths) <= 1000
    assert cost * 1000 - exact_thousandths < 500 or exact_thousandths % 1000 == 500


@given(token_counts, token_counts, prices)
def test_more_tokens_never_cost_less(first: int, second: int, price: int) -> None:
    low, high = sorted((first, second))
    assert cost_micros(low, price) <= cost_micros(high, price)


def test_no_float_column_in_the_ledger() -> None:
    floats = [
        f"{table.name}.{column.name}"
        for table in SQLModel.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, Float | Numeric)
    ]
    assert floats == []


def test_no_float_field_in_the_models() -> None:
    offenders = []
    for name in billing.models.__all__:
        model = getattr(billing.models, name)
        for field, annotation in typing.get_type_hints(model).items():
            if "float" in str(annotation) or "Decimal" in str(annotation):
                offenders.append(f"{name}.{field}")
    assert offenders == []
