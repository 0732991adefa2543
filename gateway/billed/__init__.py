"""Billed requests: the money sequence every billed route runs, once per Idempotency-Key."""
