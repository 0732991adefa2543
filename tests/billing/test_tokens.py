from __future__ import annotations

import pytest

from billing.tokens import TokenUnit, count_tokens


class TestCharUnit:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", 0),
            ("hello world", 10),
            ("  hello\tworld\n", 10),
            ("Hello, world!", 12),
            ("欢迎 大家", 4),
            ("e\u0301", 1),  # decomposed é normalizes to one character
        ],
    )
    def test_counts_non_whitespace_characters(self, text: str, expected: int) -> None:
        assert count_tokens(text, TokenUnit.char) == expected

    def test_accepts_the_unit_as_stored_on_rows(self) -> None:
        assert count_tokens("abc d", "char") == 4


class TestWordUnit:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", 0),
            ("the weather is nice today", 5),
            ("it's 5 o'clock", 5),  # it, s, 5, o, clock
            ("欢迎大家", 4),
            ("我们use FunASR 2026", 5),
            ("こんにちは world", 6),
        ],
    )
    def test_counts_cjk_characters_and_alphanumeric_runs(self, text: str, expected: int) -> None:
        assert count_tokens(text, TokenUnit.word) == expected

    def test_rejects_an_unknown_unit(self) -> None:
        with pytest.raises(ValueError, match="bytes"):
            count_tokens("x", "bytes")
