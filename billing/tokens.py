"""Counting the billable output tokens of a transcript.

The unit is a plan setting and is stored on every ledger row:

- ``char`` (default): characters of the normalized transcript, whitespace excluded.
- ``word``: every CJK character counts one; every run of other letters or digits counts one.

Normalization is Unicode NFC, so a precomposed and a decomposed "é" cost the same.
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum


class TokenUnit(StrEnum):
    char = "char"
    word = "word"


# Han ideographs (with extensions and compatibility forms), kana and Hangul syllables: scripts
# written without spaces between words, so each character is billed as one word.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x3134F),  # CJK Extensions B-G
)


def is_cjk(character: str) -> bool:
    code_point = ord(character)
    return any(low <= code_point <= high for low, high in _CJK_RANGES)


def normalize_transcript(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def count_tokens(text: str, unit: TokenUnit | str) -> int:
    """Billable tokens of ``text`` in ``unit``."""
    normalized = normalize_transcript(text)
    unit = TokenUnit(unit)
    if unit is TokenUnit.char:
        return sum(1 for character in normalized if not character.isspace())
    words = 0
    in_run = False
    for character in normalized:
        if is_cjk(character):
            words += 1
            in_run = False
        elif character.isalnum():
            if not in_run:
                words += 1
            in_run = True
        else:
            in_run = False
    return words
