from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, String, false
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class PoolNode(SQLModel, table=True):
    """An inference node registered through the admin API, or a configured node's drain flag:
    the node pool every gateway replica converges on (each re-reads this table)."""

    __tablename__ = "pool_nodes"

    url: str = Field(sa_column=Column(String(300), primary_key=True))
    draining: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    # False for a node from GATEWAY_NODES whose row only carries its drain flag.
    registered: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
