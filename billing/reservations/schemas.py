"""What a reservation holds, as ``reserve`` returns it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Hold(BaseModel):
    """An open reservation: the most its request may cost, held until settled or released."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    tenant_id: int
    api_key_id: int
    period: str
    amount_micros: int
    tokens: int
    created_at: datetime
    expires_at: datetime
