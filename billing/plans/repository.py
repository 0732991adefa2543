"""Queries of the plans table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, select

from billing.models import Plan


def get_plan_by_name(session: Session, name: str) -> Plan | None:
    return session.exec(select(Plan).where(Plan.name == name)).first()


def get_plan(session: Session, plan_id: int) -> Plan | None:
    return session.get(Plan, plan_id)


def list_plans(session: Session) -> Sequence[Plan]:
    return session.exec(select(Plan).order_by(Plan.name)).all()


def add_plan(session: Session, plan: Plan) -> Plan:
    session.add(plan)
    session.flush()
    return plan
