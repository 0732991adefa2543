"""Job webhooks: signed POSTs on completion and failure, retried with backoff, logged per job."""
