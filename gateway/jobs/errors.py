"""Refusals particular to jobs (subclasses of the gateway's ``GatewayError``).

```
GatewayError
├── InvalidRequest 400
│   └── UnsafeWebhookUrl      400 invalid_webhook_url   (webhooks/targets.py)
├── JobNotCompleted           409 job_not_completed     (no result yet, or it failed)
└── JobResultExpired          410 result_expired        (erased after the retention period)
```
"""

from __future__ import annotations

from gateway.errors import GatewayError


class JobNotCompleted(GatewayError):
    status_code = 409
    code = "job_not_completed"
    error_type = "invalid_request_error"


class JobResultExpired(GatewayError):
    status_code = 410
    code = "result_expired"
    error_type = "invalid_request_error"
