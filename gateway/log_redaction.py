"""Secrets that a client put in a URL are kept out of the server's logs.

uvicorn logs every request's path with its query (the access log) and every WebSocket's (its
error log). Two kinds of URL may carry a secret even though the gateway never asks for one
there: a WebSocket query (``?token=`` / ``?client_secret=``: a client token, or an API key that
is refused), and a customer portal link of the old form, ``/console/portal/open/<token>`` (links
now carry the token in their fragment, which no request line holds). Both are replaced by
``[redacted]`` before a line is written. The Compose stack's load balancer logs no query and no
portal-link token either (deploy/compose/haproxy.cfg).
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
_SECRETS = (
    re.compile(r"([?&](?:token|client_secret|api_key|key)=)[^&\s\"']+"),
    re.compile(r"(/console/portal/open/)[^/?#\s\"']+"),
)
# The loggers uvicorn writes request lines to.
SERVER_LOGGERS = ("uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(rf"\1{REDACTED}", text)
    return text


class RedactUrlSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            arguments = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                redact(argument) if isinstance(argument, str) else argument
                for argument in arguments
            )
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_url_secrets() -> None:
    """Install the filter on uvicorn's loggers (once; a logging config applied later keeps it)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactUrlSecrets) for existing in logger.filters):
            logger.addFilter(RedactUrlSecrets())
