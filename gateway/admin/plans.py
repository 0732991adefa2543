"""Admin: price plans."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlmodel import Session

from billing.plans import repository
from billing.plans.schemas import PlanPublic
from billing.plans.service import create_plan, require_plan, update_plan
from gateway.admin.auth import PlansRead, PlansWrite
from gateway.admin.deps import PlanName, in_transaction
from gateway.admin.schemas import PlanCreate, PlanUpdate
from gateway.deps import DatabaseDep, RequestId
from gateway.openapi import error_responses

router = APIRouter(
    prefix="/admin/plans", tags=["admin: plans"], responses=error_responses(404, 409)
)


@router.get("")
def list_plans(database: DatabaseDep, _claims: PlansRead) -> list[PlanPublic]:
    """Every plan, by name."""
    return in_transaction(
        database, lambda session: [PlanPublic.of(plan) for plan in repository.list_plans(session)]
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create(
    body: PlanCreate, database: DatabaseDep, claims: PlansWrite, request_id: RequestId
) -> PlanPublic:
    """Create a plan: price per 1,000 output tokens in micro-units, unit, quota and limits."""
    actor = claims.actor(request_id)

    def act(session: Session) -> PlanPublic:
        terms = body.model_dump(exclude={"name"})
        return PlanPublic.of(create_plan(session, body.name, actor=actor, **terms))

    return in_transaction(database, act)


@router.get("/{name}")
def show(name: PlanName, database: DatabaseDep, _claims: PlansRead) -> PlanPublic:
    """One plan."""
    return in_transaction(database, lambda session: PlanPublic.of(require_plan(session, name)))


@router.patch("/{name}")
def update(
    name: PlanName,
    body: PlanUpdate,
    database: DatabaseDep,
    claims: PlansWrite,
    request_id: RequestId,
) -> PlanPublic:
    """Change a plan's price or limits (null lifts a limit); past usage rows keep the price
    they were billed at."""
    actor = claims.actor(request_id)
    return in_transaction(
        database, lambda session: PlanPublic.of(update_plan(session, name, body, actor=actor))
    )
