"""Build random-weight model directories: a Paraformer with FunASR's own classes, a Whisper with
transformers' classes converted by CTranslate2.

The Paraformer directory (``config.yaml``, ``model.pt``, ``tokens.json``) loads through
``AutoModel(model=dir)`` exactly like a downloaded one; the Whisper directory (``model.bin``,
``config.json``, ``tokenizer.json``, ...) is a CTranslate2 conversion like the hub's. Tests
exercise the real loading and inference paths offline, and benchmarks get the real FLOPs of a
paraformer-large- or Whisper-large-v3-shaped model (random weights cost the same as trained
ones; the transcripts are gibberish). Whisper needs torch and transformers (the funasr and bench
extras).

    python -m inference.modelgen ./var/models/tiny-paraformer --shape tiny
    python -m inference.modelgen ./var/models/tiny-paraformer-online --shape tiny --streaming
    python -m inference.modelgen ./var/models/whisper-large-v3 --whisper --shape large-v3
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


def paraformer_config(shape: dict[str, int], *, streaming: bool = False) -> dict[str, Any]:
    """The configuration of paraformer-zh in ``shape``; ``streaming`` gives the online model's
    (paraformer-zh-streaming: a chunked encoder, an online front end)."""
    config = _offline_paraformer_config(shape)
    if streaming:
        config["model"] = "ParaformerStreaming"
        config["encoder"] = "SANMEncoderChunkOpt"
        config["encoder_conf"].update(
            input_layer="pe_online",
            chunk_size=[12, 15],
            stride=[8, 10],
            pad_left=[0, 0],
            encoder_att_look_back_factor=[4, 4],
            decoder_att_look_back_factor=[1, 1],
        )
        config["decoder_conf"]["sanm_shfit"] = 5
        config["frontend"] = "WavFrontendOnline"
    return config


def _offline_paraformer_config(shape: dict[str, int]) -> dict[str, Any]:
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


def build_random_paraformer(
    directory: Path, shape: str = "tiny", seed: int = 0, *, streaming: bool = False
) -> Path:
    """Write a loadable random-weight Paraformer (``streaming``: its online variant) to
    ``directory`` and return it."""
    import funasr  # noqa: F401  (registers FunASR's model classes)
    import torch
    import yaml
    from funasr.register import tables

    dimensions = SHAPES[shape]
    directory.mkdir(parents=True, exist_ok=True)
    tokens = token_list(dimensions["vocab"])
    config = paraformer_config(dimensions, streaming=streaming)
    (directory / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    (directory / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))

    torch.manual_seed(seed)
    frontend = tables.frontend_classes.get(config["frontend"])(**config["frontend_conf"])
    model_class = tables.model_classes.get(config["model"])
    arguments = {**config["model_conf"], **{k: v for k, v in config.items() if k != "model"}}
    model = model_class(**arguments, vocab_size=len(tokens), input_size=frontend.output_size())
    torch.save(model.state_dict(), directory / "model.pt")
    return directory


# transformers WhisperConfig fields of the shapes a random Whisper can take.
WHISPER_SHAPES: dict[str, dict[str, int]] = {
    # A few million parameters: loads and decodes a window in well under a second on a CPU.
    "tiny": {
        "d_model": 64,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128,
        "num_mel_bins": 80,
    },
    # The shape of whisper-large-v3.
    "large-v3": {
        "d_model": 1280,
        "encoder_layers": 32,
        "decoder_layers": 32,
        "encoder_attention_heads": 20,
        "decoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "decoder_ffn_dim": 5120,
        "num_mel_bins": 128,
    },
}
# Whisper's vocabulary size (51866 for large-v3; one slot fewer changes no FLOPs that matter).
WHISPER_VOCABULARY = 51865


def build_random_whisper(
    directory: Path, shape: str = "tiny", seed: int = 0, quantization: str | None = None
) -> Path:
    """Write a loadable random-weight Whisper (CTranslate2) of ``shape`` to ``directory``, with
    the embedded whisper-tiny.en's tokenizer. CTranslate2 treats it as English-only (it decodes
    with the English prompt), which changes no cost that matters for a benchmark."""
    import shutil

    import ctranslate2
    import torch
    import transformers

    from inference.engines.whisper_engine import embedded_model_dir

    source = directory.parent / f"{directory.name}.transformers"
    source.mkdir(parents=True, exist_ok=True)
    tokenizer = transformers.WhisperTokenizerFast(
        tokenizer_file=str(embedded_model_dir() / "tokenizer.json")
    )
    tokenizer.save_pretrained(source)
    dimensions = WHISPER_SHAPES[shape]
    config = transformers.WhisperConfig(
        **dimensions,
        vocab_size=WHISPER_VOCABULARY,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(source)
    if quantization is None:
        quantization = "float16" if ctranslate2.get_cuda_device_count() > 0 else "int8"
    converter = ctranslate2.converters.TransformersConverter(
        str(source), copy_files=["tokenizer.json"]
    )
    converter.convert(str(directory), quantization=quantization, force=True)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"feature_size": dimensions["num_mel_bins"], "sampling_rate": 16000})
    )
    shutil.rmtree(source)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--whisper", action="store_true", help="a Whisper, not a Paraformer")
    parser.add_argument("--shape", choices=sorted({*SHAPES, *WHISPER_SHAPES}), default="tiny")
    parser.add_argument(
        "--streaming", action="store_true", help="the online Paraformer (paraformer-zh-streaming)"
    )
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    if options.whisper:
        path = build_random_whisper(options.directory, options.shape, options.seed)
    else:
        path = build_random_paraformer(
            options.directory, options.shape, options.seed, streaming=options.streaming
        )
    print(path)  # noqa: T201


if __name__ == "__main__":
    main()
