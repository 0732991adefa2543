"""Tables of the ledger database, one module per table."""

from billing.models.api_key import ApiKey
from billing.models.audit_entry import AuditEntry
from billing.models.credit_entry import CreditEntry
from billing.models.idempotency_record import IdempotencyRecord
from billing.models.invoice import Invoice, InvoiceItem, InvoiceLine
from billing.models.job import Job
from billing.models.job_webhook_delivery import JobWebhookDelivery
from billing.models.plan import Plan
from billing.models.pool_node import PoolNode
from billing.models.reservation import Reservation
from billing.models.returned_charge import ReturnedCharge
from billing.models.tenant import Tenant
from billing.models.tenant_account import TenantAccount
from billing.models.tenant_period import TenantPeriod
from billing.models.usage_event import UsageEvent

__all__ = [
    "ApiKey",
    "AuditEntry",
    "CreditEntry",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceItem",
    "InvoiceLine",
    "Job",
    "JobWebhookDelivery",
    "Plan",
    "PoolNode",
    "Reservation",
    "ReturnedCharge",
    "Tenant",
    "TenantAccount",
    "TenantPeriod",
    "UsageEvent",
]
