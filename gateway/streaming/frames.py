"""The largest WebSocket message each streaming protocol takes, from the item limit.

A message carries audio, and no item may hold more than ``GATEWAY_REALTIME_MAX_ITEM_SECONDS`` of
it, so no legitimate message is larger than one item's audio in its protocol's framing:

- realtime (``/v1/realtime``): an ``input_audio_buffer.append`` event, one item of 24 kHz pcm16
  as base64 inside a small JSON object;
- FunASR (``/funasr``): a binary frame of one item of pcm16 at the session's ``audio_fs``
  (at most 48 kHz), or a JSON text message (the configuration, ``is_speaking``).

``websocket_max_message_bytes`` is the larger of the two, the server's cap (uvicorn's
``ws_max_size``, 16 MiB by default, which would let one message commit an item dozens of times
over the limit). Each session also refuses a message over its own protocol's limit with an
error and close code 1009 (message too big), whatever cap the server runs with.
"""

from __future__ import annotations

from gateway.config import GatewaySettings
from gateway.upload_limit import base64_length

# The JSON around the base64 audio of an append: its type, an event_id, the field names.
REALTIME_EVENT_OVERHEAD_BYTES = 4096
REALTIME_SAMPLE_RATE = 24_000
FUNASR_MAX_SAMPLE_RATE = 48_000
# A FunASR text message: the configuration (hotwords are cut to 4096 characters) or a control.
FUNASR_MAX_TEXT_BYTES = 64 * 1024
MESSAGE_TOO_BIG = 1009


def item_pcm_bytes(settings: GatewaySettings, sample_rate: int) -> int:
    """One item's pcm16 at ``sample_rate``, rounded down to whole samples."""
    size = int(settings.realtime_max_item_seconds * sample_rate) * 2
    return max(2, size)


def realtime_max_message_bytes(settings: GatewaySettings) -> int:
    pcm = item_pcm_bytes(settings, REALTIME_SAMPLE_RATE)
    return base64_length(pcm) + REALTIME_EVENT_OVERHEAD_BYTES


def funasr_max_message_bytes(settings: GatewaySettings, sample_rate: int) -> int:
    return max(item_pcm_bytes(settings, sample_rate), FUNASR_MAX_TEXT_BYTES)


def websocket_max_message_bytes(settings: GatewaySettings) -> int:
    """uvicorn's ``ws_max_size`` for the gateway: the largest message any protocol takes."""
    return max(
        realtime_max_message_bytes(settings),
        funasr_max_message_bytes(settings, FUNASR_MAX_SAMPLE_RATE),
    )
