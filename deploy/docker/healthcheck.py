"""The images' HEALTHCHECK: exit 0 when ``HEALTHCHECK_URL`` (the process's own /health/ready)
answers 200, 1 otherwise (not ready yet, draining, or not answering)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

url = os.environ.get("HEALTHCHECK_URL", "http://127.0.0.1:8000/health/ready")
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as error:
    sys.stderr.write(f"{url}: {error}\n")
    sys.exit(1)
