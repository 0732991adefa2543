"""Build a random-weight Paraformer model directory with FunASR's own classes.

The directory (``config.yaml``, ``model.pt``, ``tokens.json``) loads through
``AutoModel(model=dir)`` exactly like a downloaded one, so tests exercise the real loading and
inference path offline, and benchmarks get the real FLOPs of a paraformer-large-shaped model
(random weights cost the same as trained ones; the transcripts are gibberish).

    python -m inference.modelgen ./var/models/tiny-paraformer --shape tiny
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    # A few hundred thousand parameters: loads and decodes in milliseconds on a CPU.
    "tiny": {"d_model": 32, "heads": 2, "ffn": 64, "enc_blocks": 2, "dec_blocks": 2, "vocab": 64},
    # The shape of paraformer-zh (speech_paraformer-large, vocab 8404).
    "large": {
        "d_model": 512,
        "heads": 4,
        "ffn": 2048,
        "enc_blocks": 50,
        "dec_blocks": 16,
        "vocab": 8404,
    },
}


def paraformer_config(shape: dict[str, int]) -> dict[str, Any]:
    dropout = {"dropout_rate": 0.1, "positional_dropout_rate": 0.1}
    return {
        "model": "Paraformer",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "output_size": shape["d_model"],
            "attention_heads": shape["heads"],
            "linear_units": shape["ffn"],
            "num_blocks": shape["enc_blocks"],
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            **dropout,
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": shape["heads"],
            "linear_units": shape["ffn"],
            "num_blocks": shape["dec_blocks"],
            "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1,
            "att_layer_num": shape["dec_blocks"],
            "kernel_size": 11,
            "sanm_shfit": 0,
            **dropout,
        },
        "predictor": "CifPredictorV2",
        "predictor_conf": {
            "idim": shape["d_model"],
            "threshold": 1.0,
            "l_order": 1,
            "r_order": 1,
            "tail_threshold": 0.45,
        },
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True},
        "normalize": None,
    }


def token_list(vocab_size: int) -> list[str]:
    """Special symbols, then lowercase letters, then CJK ideographs up to ``vocab_size``."""
    tokens = ["<blank>", "<s>", "</s>"] + [chr(code) for code in range(ord("a"), ord("z") + 1)]
    code = 0x4E00
    while len(tokens) < vocab_size - 1:
        tokens.append(chr(code))
        code += 1
    return [*tokens, "<unk>"]


def build_random_paraformer(directory: Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Write a loadable random-weight Paraformer to ``directory`` and return it."""
    import funasr  # noqa: F401  (registers FunASR's model classes)
    import torch
    import yaml
    from funasr.register import tables

    dimensions = SHAPES[shape]
    directory.mkdir(parents=True, exist_ok=True)
    tokens = token_list(dimensions["vocab"])
    config = paraformer_config(dimensions)
    (directory / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    (directory / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))

    torch.manual_seed(seed)
    frontend = tables.frontend_classes.get(config["frontend"])(**config["frontend_conf"])
    model_class = tables.model_classes.get(config["model"])
    arguments = {**config["model_conf"], **{k: v for k, v in config.items() if k != "model"}}
    model = model_class(**arguments, vocab_size=len(tokens), input_size=frontend.output_size())
    torch.save(model.state_dict(), directory / "model.pt")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    path = build_random_paraformer(options.directory, options.shape, options.seed)
    print(path)  # noqa: T201


if __name__ == "__main__":
    main()
