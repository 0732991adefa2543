"""Ledger counts an operator watches, read by the gateway's metrics at scrape time."""
