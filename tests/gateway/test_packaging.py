"""The gateway installs and runs without torch: importing it must not pull in the node stack."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures.processes import ROOT


def test_gateway_and_cli_import_without_torch_or_funasr() -> None:
    probe = (
        "import sys, gateway.app, gateway.cli.main; "
        "heavy = sorted(m for m in ('torch', 'funasr', 'av', 'pocketsphinx', 'numpy', "
        "'faster_whisper', 'ctranslate2', 'onnxruntime') "
        "if m in sys.modules); print(','.join(heavy))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == ""


def test_asrgw_up_starts_the_nodes_own_default_model() -> None:
    from gateway.cli.up import DEFAULT_MODELS
    from gateway.config import GatewaySettings
    from inference.config import InferenceSettings

    assert DEFAULT_MODELS == InferenceSettings.model_fields["models"].default
    assert GatewaySettings.model_fields["default_model"].default == DEFAULT_MODELS


def test_jobs_take_as_long_audio_as_a_default_node() -> None:
    from gateway.config import GatewaySettings
    from inference.config import InferenceSettings

    assert (
        GatewaySettings.model_fields["job_max_audio_seconds"].default
        == InferenceSettings.model_fields["max_audio_seconds"].default
    )


def test_the_container_whitelist_imports_with_the_standard_library_alone() -> None:
    """The gateway imports ``inference.containers`` (the whitelist its probe shares with the
    node) and ``inference.protocol``; neither pulls in PyAV, numpy or the node's stack."""
    probe = (
        "import sys, inference.containers, inference.protocol; "
        "heavy = sorted(m for m in ('torch', 'funasr', 'av', 'numpy', 'faster_whisper') "
        "if m in sys.modules); print(','.join(heavy))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == ""


def test_a_default_node_runs_without_torch_or_funasr() -> None:
    """The default install path (`pip install .[node]`) serves whisper-tiny.en and cuts long
    audio with VAD without torch: neither is imported on the way."""
    probe = (
        "import sys, numpy as np\n"
        "from inference.config import InferenceSettings\n"
        "from inference.engines.registry import build_engine, parse_model_specs\n"
        "from inference.vad import VadSegmenter\n"
        "from inference.protocol import TranscribeParams\n"
        "(spec,) = parse_model_specs(InferenceSettings().models)\n"
        "engine = build_engine(spec)\n"
        "engine.load()\n"
        "engine.warm_up()\n"
        "VadSegmenter().split(np.zeros(16000 * 30, dtype=np.float32))\n"
        "print(spec.engine, sorted(m for m in ('torch', 'funasr') if m in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip().splitlines()[-1] == "faster-whisper []"
