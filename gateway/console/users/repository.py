"""Queries of the admin_users table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from billing.models import AdminUser


def get_user(session: Session, username: str) -> AdminUser | None:
    return session.exec(select(AdminUser).where(AdminUser.username == username)).first()


def get_user_by_id(session: Session, user_id: int) -> AdminUser | None:
    return session.get(AdminUser, user_id)


def list_users(session: Session) -> Sequence[AdminUser]:
    return session.exec(select(AdminUser).order_by(col(AdminUser.username))).all()


def add_user(session: Session, user: AdminUser) -> AdminUser:
    session.add(user)
    session.flush()
    return user
