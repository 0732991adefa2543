"""Tables of the ledger database, one module per table."""

from billing.models.api_key import ApiKey
from billing.models.plan import Plan
from billing.models.tenant import Tenant
from billing.models.usage_event import UsageEvent

__all__ = ["ApiKey", "Plan", "Tenant", "UsageEvent"]
