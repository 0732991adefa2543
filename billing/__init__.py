"""Tenants, plans, API-key records, the usage ledger and token counting.

Imports only the standard library, SQLModel and pydantic: the gateway and the admin CLI use it,
the inference node never does.
"""
