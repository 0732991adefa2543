"""The customer- and admin-facing HTTP gateway (FastAPI). Never imports torch or FunASR."""
