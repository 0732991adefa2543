"""Tables of the ledger database, one module per table."""

from billing.models.admin_user import AdminUser
from billing.models.api_key import ApiKey
from billing.models.audit_entry import AuditEntry
from billing.models.client_secret import ClientSecret
from billing.models.console_session import ConsoleSession
from billing.models.credit_entry import CreditEntry
from billing.models.idempotency_record import IdempotencyRecord
from billing.models.invoice import Invoice, InvoiceItem, InvoiceLine
from billing.models.job import Job
from billing.models.job_webhook_delivery import JobWebhookDelivery
from billing.models.plan import Plan
from billing.models.pool_node import PoolNode
from billing.models.portal_link import PortalLink
from billing.models.reservation import Reservation
from billing.models.returned_charge import ReturnedCharge
from billing.models.tenant import Tenant
from billing.models.tenant_account import TenantAccount
from billing.models.tenant_period import TenantPeriod
from billing.models.usage_event import UsageEvent

__all__ = [
    "AdminUser",
    "ApiKey",
    "AuditEntry",
    "ClientSecret",
    "ConsoleSession",
    "CreditEntry",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceItem",
    "InvoiceLine",
    "Job",
    "JobWebhookDelivery",
    "Plan",
    "PoolNode",
    "PortalLink",
    "Reservation",
    "ReturnedCharge",
    "Tenant",
    "TenantAccount",
    "TenantPeriod",
    "UsageEvent",
]
