"""Console roles of password users, as sets of the admin API's scopes."""

from __future__ import annotations

from enum import StrEnum

from gateway.admin.auth import Scope

READ_SCOPES = frozenset(
    {
        Scope.tenants_read,
        Scope.plans_read,
        Scope.keys_read,
        Scope.billing_read,
        Scope.nodes_read,
        Scope.audit_read,
    }
)


class Role(StrEnum):
    owner = "owner"
    operator = "operator"
    finance = "finance"


ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    # Everything the admin API allows.
    Role.owner: frozenset(Scope),
    # Runs the service day to day: tenants, keys, credit, invoices, nodes; prices stay with owners.
    Role.operator: READ_SCOPES
    | {Scope.tenants_write, Scope.keys_write, Scope.billing_write, Scope.nodes_write},
    # Reads every page and downloads every report and invoice; writes nothing.
    Role.finance: READ_SCOPES,
}


def scopes_of(role: str) -> frozenset[Scope]:
    return ROLE_SCOPES[Role(role)]
