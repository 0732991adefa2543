"""Asynchronous transcription jobs: a durable queue in the ledger database, workers inside the
gateway processes, audio storage, retention and signed webhooks (docs/jobs.md)."""
