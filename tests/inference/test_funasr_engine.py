"""The FunASR engine on a tiny random-weight Paraformer, loaded through ``AutoModel(model=dir)``:
the real loading and inference path, offline."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.app import create_app
from inference.audio import decode_audio
from inference.config import InferenceSettings
from inference.engines.funasr_engine import FunASREngine
from inference.errors import ModelLoadError
from inference.protocol import TranscribeParams, TranscriptionResult
from tests.fixtures.processes import ROOT


class TestFunASREngine:
    def test_model_directory_is_what_funasr_exports(self, paraformer_dir: Path) -> None:
        assert {path.name for path in paraformer_dir.iterdir()} >= {
            "config.yaml",
            "model.pt",
            "tokens.json",
        }

    def test_loads_from_directory_and_transcribes(
        self, paraformer_dir: Path, weather_wav: Path
    ) -> None:
        engine = FunASREngine("tiny-paraformer", str(paraformer_dir), device="cpu")
        engine.load()
        output = engine.transcribe(decode_audio(weather_wav.read_bytes()), TranscribeParams())
        # Random weights: the words are noise, but they come out of the real decoder.
        assert output.text
        assert len(output.segments) == 1
        assert output.segments[0].text == output.text
        assert output.segments[0].end > 1.0
        assert engine.info().loaded is True

    def test_missing_directory_names_what_is_missing(self, tmp_path: Path) -> None:
        engine = FunASREngine("mine", str(tmp_path / "nothing-here"), device="cpu")
        with pytest.raises(ModelLoadError, match=r"config\.yaml and model\.pt"):
            engine.load()

    def test_a_node_without_the_funasr_extra_says_which_extra(self, paraformer_dir: Path) -> None:
        # A torch-free node (`pip install .[node]`) has no FunASR: hide it, as such a host would.
        probe = (
            "import sys; sys.modules['funasr'] = None\n"
            "from inference.engines.funasr_engine import FunASREngine\n"
            "from inference.errors import ModelLoadError\n"
            f"engine = FunASREngine('tiny', {str(paraformer_dir)!r}, device='cpu')\n"
            "try:\n    engine.load()\nexcept ModelLoadError as error:\n    print(error.message)\n"
        )
        completed = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
        )
        assert "pip install 'asr-billing-gateway[node,funasr]'" in completed.stdout

    def test_unreachable_hub_says_how_to_use_a_directory(self) -> None:
        # This machine cannot reach any model hub: the download fails, for real.
        engine = FunASREngine("paraformer-zh", device="cpu")
        with pytest.raises(ModelLoadError) as raised:
            engine.load()
        message = raised.value.message
        assert "paraformer-zh" in message
        assert "INFERENCE_MODELS=paraformer-zh=/path/to/model-dir" in message


class TestNodeWithFunASR:
    @pytest.fixture
    def node(self, paraformer_dir: Path) -> Iterator[TestClient]:
        settings = InferenceSettings(models=f"tiny-paraformer={paraformer_dir}", device="cpu")
        with TestClient(create_app(settings)) as client:
            deadline = time.monotonic() + 120
            while client.get("/health/ready").status_code != 200:
                assert time.monotonic() < deadline, client.get("/health/ready").json()
                time.sleep(0.05)
            yield client

    def test_returns_the_canonical_result(self, node: TestClient, weather_wav: Path) -> None:
        response = node.post(
            "/v1/transcribe", files={"file": ("weather.wav", weather_wav.read_bytes())}
        )
        assert response.status_code == 200
        result = TranscriptionResult.model_validate(response.json())
        assert result.model == "tiny-paraformer"
        assert result.text
        assert 1.0 < result.duration < 3.0
        assert result.segments[0].start == 0.0
