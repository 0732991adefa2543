"""The gateway installs and runs without torch: importing it must not pull in the node stack."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures.processes import ROOT


def test_gateway_and_cli_import_without_torch_or_funasr() -> None:
    probe = (
        "import sys, gateway.app, gateway.cli.main; "
        "heavy = sorted(m for m in ('torch', 'funasr', 'av', 'pocketsphinx', 'numpy') "
        "if m in sys.modules); print(','.join(heavy))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == ""
