"""Queries of the pool_nodes table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from billing.models import PoolNode


def list_pool_nodes(session: Session) -> Sequence[PoolNode]:
    return session.exec(select(PoolNode).order_by(col(PoolNode.url))).all()


def get_pool_node(session: Session, url: str) -> PoolNode | None:
    return session.get(PoolNode, url)


def save_pool_node(session: Session, node: PoolNode) -> PoolNode:
    session.add(node)
    session.flush()
    return node


def delete_pool_node(session: Session, node: PoolNode) -> None:
    session.delete(node)
    session.flush()
