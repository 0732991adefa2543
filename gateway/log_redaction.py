"""Secrets that a client put in a URL are kept out of the server's logs.

uvicorn writes every request line and WebSocket path, query included, to its loggers. Two
kinds of URL may carry a secret even though the gateway never asks for one there: a WebSocket
query (``?token=`` / ``?client_secret=``: a client token, or an API key that is refused), and a
customer portal link of the old form, ``/console/portal/open/<token>`` (links now carry the
token in their fragment, which no request line holds).
"""

from __future__ import annotations

import logging
import re

SECRET_IN_URL = re.compile(r"([?&](?:token|client_secret)=|/console/portal/open/)[^&?#\s\"']+")
REDACTED = r"\1[redacted]"


class RedactUrlSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                SECRET_IN_URL.sub(REDACTED, arg) if isinstance(arg, str) else arg
                for arg in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = SECRET_IN_URL.sub(REDACTED, record.msg)
        return True


def redact_url_secrets() -> None:
    """Install the filter on uvicorn's loggers (once)."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactUrlSecrets) for existing in logger.filters):
            logger.addFilter(RedactUrlSecrets())
