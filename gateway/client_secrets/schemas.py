"""``POST /v1/realtime/client_secrets``, in the shape of OpenAI's realtime client secrets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ClientSecretExpiry(BaseModel):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(ge=1, description="Lifetime from now, up to the gateway's maximum.")


class ClientSecretCreate(BaseModel):
    expires_after: ClientSecretExpiry | None = None
    # Accepted for compatibility with OpenAI's request; the session is configured over the
    # WebSocket once it is open.
    session: dict[str, Any] | None = None


class ClientSecretPublic(BaseModel):
    """A client token: shown in this answer only (the database keeps its hash)."""

    value: str = Field(description="The token, ``ek_…``: usable once, until ``expires_at``.")
    expires_at: int = Field(description="When the token stops opening sessions, unix seconds.")
    session: dict[str, Any]
