"""Shared fixtures: tiny randomly initialised llama models with a real tokenizer, built
in-process (no downloads), and scripted backends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("EVALIGN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def real_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer (with its chat template), read from the built-in GGUF."""
    from transformers import AutoTokenizer

    from evalign import models

    gguf = models.gguf_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(out)
    return out


def make_tiny_model(tokenizer_dir: Path, out: Path, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(real_tokenizer_dir, tmp_path_factory) -> Path:
    return make_tiny_model(real_tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))
