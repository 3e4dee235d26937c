"""Helpers for tests, of evalign and of code built on it: tiny models, no downloads.

A tiny randomly initialised llama with a real tokenizer and chat template (SmolLM2's, read
from the built-in GGUF) trains and generates in seconds on a CPU, so the whole loop can be
exercised for real without a model hub.
"""

from __future__ import annotations

from pathlib import Path


def save_builtin_tokenizer(out: str | Path) -> Path:
    """SmolLM2's tokenizer with its chat template, from the built-in GGUF, saved to ``out``."""
    from transformers import AutoTokenizer

    from evalign import weights as models

    gguf = models.gguf_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = Path(out)
    tok.save_pretrained(out)
    return out


def make_tiny_model(tokenizer_dir: str | Path, out: str | Path, seed: int = 0, layers: int = 2,
                    hidden: int = 32) -> Path:
    """A randomly initialised llama (about 1.6M parameters) saved as a plain HF checkpoint."""
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
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
