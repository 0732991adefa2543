"""A WebSocket session's client messages, read ahead by a task of their own.

A session that waits (for room in its item queue, for a node, for the ledger) still reads its
client, up to ``budget_bytes`` of messages it has not taken yet, so a client that leaves is
noticed at once: ``left`` is set, and the session stops the work nobody will receive. Past the
budget the reader waits for the session to catch up, and the client's own socket buffers, then
TCP, hold it back: a client that sends faster than its audio is transcribed is slowed, not
buffered without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect


def message_bytes(message: Message) -> int:
    return len(message.get("bytes") or b"") + len(message.get("text") or "")


class Inbox:
    def __init__(self, websocket: WebSocket, budget_bytes: int) -> None:
        self.websocket = websocket
        self.budget_bytes = budget_bytes
        self.left = asyncio.Event()
        self._messages: deque[Message] = deque()
        self._held_bytes = 0
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        """Read until the client leaves (run it as a task beside the session)."""
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._held_bytes < self.budget_bytes)
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError, OSError):
                message = {"type": "websocket.disconnect"}
            async with self._changed:
                if message["type"] == "websocket.disconnect":
                    self.left.set()
                    self._changed.notify_all()
                    return
                self._messages.append(message)
                self._held_bytes += message_bytes(message)
                self._changed.notify_all()

    async def receive(self) -> Message | None:
        """The client's next message; None once it has left (nothing sent to it arrives)."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._messages) or self.left.is_set())
            if self.left.is_set():
                return None
            message = self._messages.popleft()
            self._held_bytes -= message_bytes(message)
            self._changed.notify_all()
            return message
