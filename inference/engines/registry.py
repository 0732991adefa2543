"""Building engines from the ``INFERENCE_MODELS`` specification.

Which engine serves a name: ``pocketsphinx*`` is PocketSphinx; ``whisper-*`` (and any directory
holding a CTranslate2 ``model.bin``) is faster-whisper; everything else is a FunASR model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.config import InferenceSettings
from inference.engines.base import Engine

POCKETSPHINX = "pocketsphinx"
FASTER_WHISPER = "faster-whisper"
FUNASR = "funasr"


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    engine: str
    source: str | None


def engine_for(name: str, source: str | None) -> str:
    if name.startswith("pocketsphinx"):
        return POCKETSPHINX
    if name.startswith("whisper-"):
        return FASTER_WHISPER
    if source is not None:
        directory = Path(source).expanduser()
        if (directory / "model.bin").is_file() and (directory / "config.json").is_file():
            return FASTER_WHISPER
    return FUNASR


def parse_model_specs(specification: str) -> list[ModelSpec]:
    """``"whisper-tiny.en,paraformer-zh=/models/pz"`` → two specs, in order."""
    specs: list[ModelSpec] = []
    for entry in specification.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, _, source = entry.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"model entry {entry!r} has no name")
        location = source.strip() or None
        specs.append(ModelSpec(model_id=name, engine=engine_for(name, location), source=location))
    if not specs:
        raise ValueError("INFERENCE_MODELS names no model")
    if len({spec.model_id for spec in specs}) != len(specs):
        raise ValueError("INFERENCE_MODELS names a model twice")
    return specs


def build_engine(spec: ModelSpec, settings: InferenceSettings | None = None) -> Engine:
    """The engine for ``spec``; its module is imported only here, so a node imports FunASR
    (and torch) only when it serves a FunASR model."""
    settings = settings or InferenceSettings()
    if spec.engine == POCKETSPHINX:
        from inference.engines.pocketsphinx_engine import PocketSphinxEngine

        return PocketSphinxEngine(spec.model_id)
    if spec.engine == FASTER_WHISPER:
        from inference.engines.whisper_engine import FasterWhisperEngine

        return FasterWhisperEngine(
            spec.model_id,
            spec.source,
            device=settings.device,
            compute_type=settings.whisper_compute_type,
            beam_size=settings.whisper_beam_size,
            best_of=settings.whisper_best_of,
            max_new_tokens=settings.whisper_max_new_tokens,
            threads=settings.threads,
            download_root=settings.whisper_download_root or None,
        )
    from inference.engines.funasr_engine import FunASREngine

    return FunASREngine(
        spec.model_id,
        spec.source,
        device=settings.device,
        hub=settings.hub,
        threads=settings.threads,
    )
