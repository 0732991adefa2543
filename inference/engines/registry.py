"""Building engines from the ``INFERENCE_MODELS`` specification."""

from __future__ import annotations

from dataclasses import dataclass

from inference.engines.base import Engine


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    engine: str
    source: str | None


def parse_model_specs(specification: str) -> list[ModelSpec]:
    """``"paraformer-zh=/models/pz,pocketsphinx-en"`` → two specs, in order."""
    specs: list[ModelSpec] = []
    for entry in specification.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, _, source = entry.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"model entry {entry!r} has no name")
        engine = "pocketsphinx" if name.startswith("pocketsphinx") else "funasr"
        specs.append(ModelSpec(model_id=name, engine=engine, source=source.strip() or None))
    if not specs:
        raise ValueError("INFERENCE_MODELS names no model")
    if len({spec.model_id for spec in specs}) != len(specs):
        raise ValueError("INFERENCE_MODELS names a model twice")
    return specs


def build_engine(
    spec: ModelSpec, *, device: str = "auto", hub: str = "ms", threads: int = 0
) -> Engine:
    if spec.engine == "pocketsphinx":
        from inference.engines.pocketsphinx_engine import PocketSphinxEngine

        return PocketSphinxEngine(spec.model_id)
    from inference.engines.funasr_engine import FunASREngine

    return FunASREngine(spec.model_id, spec.source, device=device, hub=hub, threads=threads)
