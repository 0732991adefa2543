"""The ``language`` parameter of every transcription route, checked once at the edge.

The codes are those the engines accept: Whisper's (ISO 639-1, plus ``haw`` and ``yue``, which
have no two-letter code, and ``jw``, Whisper's spelling of Javanese), a superset of FunASR's and
PocketSphinx's, and ``auto`` for detection. Anything else is a 400 ``invalid_value`` naming
``language`` before the upload is read, so nothing is reserved or billed for it. A model that
does not speak a valid language still answers 400 ``unsupported_language`` from its node.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

AUTO = "auto"
# Whisper's language codes, in its own order (most training data first).
ENGINE_LANGUAGES = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv",
    "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr",
    "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu",
    "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)  # fmt: skip
LANGUAGE_CODES = frozenset((AUTO, *ENGINE_LANGUAGES))
DESCRIPTION = (
    "The language of the audio as an ISO 639-1 code (e.g. `en`, `zh`), or `auto` to detect it "
    "[default: auto]. Knowing it improves accuracy and latency."
)


def check_language(value: str) -> str:
    """``value`` when it is a code the engines accept; an empty value means ``auto``."""
    if not value:
        return AUTO
    if value not in LANGUAGE_CODES:
        shown = value if len(value) <= 16 else f"{value[:16]}…"
        raise PydanticCustomError(
            "invalid_language",
            "'{shown}' is not a supported language; use an ISO 639-1 code such as 'en', or 'auto'",
            {"shown": shown},
        )
    return value


# The validated parameter, with the codes as its schema's enum.
Language = Annotated[
    str,
    AfterValidator(check_language),
    WithJsonSchema(
        {"type": "string", "enum": sorted(LANGUAGE_CODES), "description": DESCRIPTION},
        mode="validation",
    ),
]
