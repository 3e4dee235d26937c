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
    from evalign.testing import save_builtin_tokenizer

    return save_builtin_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(real_tokenizer_dir, tmp_path_factory) -> Path:
    from evalign.testing import make_tiny_model

    return make_tiny_model(real_tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))
