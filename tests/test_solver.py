from __future__ import annotations

import math

import pytest

from evalign.config import TrainConfig
from evalign.solver.pairs import Pair, best_worst, build_pairs, mix_pairs
from evalign.solver.train import train_preference


def test_best_vs_worst_and_ties():
    p = best_worst(1, "q", ["a", "b", "c"], [0.2, 0.9, 0.1], "original")
    assert (p.chosen, p.rejected, p.chosen_score, p.rejected_score) == ("b", "c", 0.9, 0.1)
    assert best_worst(1, "q", ["a", "b"], [0.5, 0.5], "original") is None  # nothing to learn
    assert best_worst(1, "q", ["same", " same "], [0.1, 0.9], "original") is None  # identical texts
    assert best_worst(1, "q", ["a"], [1.0], "original") is None  # k = 1
    nan = best_worst(1, "q", ["a", "b", "c"], [float("nan"), 0.3, 0.7], "original")
    assert (nan.chosen, nan.rejected) == ("c", "b")
    # Equal rewards at the top: the earliest sample wins, deterministically.
    assert best_worst(1, "q", ["a", "b", "c"], [0.9, 0.9, 0.1], "x").chosen == "a"


def test_build_pairs_counts_ties():
    pairs, ties = build_pairs([1, 2, 3], ["q1", "q2", "q3"], [["a", "b"], ["c", "d"], ["e", "f"]],
                              [[0.1, 0.9], [0.5, 0.5], [0.3, 0.2]], "evolved")
    assert [p.prompt_id for p in pairs] == [1, 3] and ties == 1
    assert all(p.source == "evolved" for p in pairs)


def _pairs(n, source):
    return [Pair(i, f"q{i}", "c", "r", 1.0, 0.0, source) for i in range(n)]


def test_mix_keeps_fractions_of_each_source_and_is_seeded():
    orig, evol = _pairs(20, "original"), _pairs(40, "evolved")
    mixed = mix_pairs(orig, evol, 0.2, 0.8, seed=3)
    assert sum(p.source == "original" for p in mixed) == 4
    assert sum(p.source == "evolved" for p in mixed) == 32
    assert mixed == mix_pairs(orig, evol, 0.2, 0.8, seed=3)
    assert mixed != mix_pairs(orig, evol, 0.2, 0.8, seed=4)
    # The paper's sizes: 25% of N sampled x 4 evolutions ~ N evolved; 0.2 N + 0.8 N = N pairs.
    assert len(mix_pairs(_pairs(100, "original"), _pairs(100, "evolved"), 0.2, 0.8, 0)) == 100
    # A small pool keeps a buffer pair (round, not floor).
    assert sum(p.source == "original" for p in mix_pairs(_pairs(3, "original"), [], 0.2, 0.8, 0)) == 1


PAIRS = [{"prompt": f"Give advice number {i}.", "chosen": "Drink water and sleep well.",
          "rejected": "no no no no no"} for i in range(8)]


@pytest.mark.parametrize("loss", ["dpo", "ipo", "simpo", "orpo"])
def test_a_preference_step_on_a_tiny_model_lowers_the_loss(tiny_model_dir, tmp_path, loss):
    cfg = TrainConfig(loss=loss, learning_rate=2e-3, epochs=3, batch_size=4, gradient_accumulation_steps=1,
                      max_length=128, beta=0.1, warmup_ratio=0.0, min_pairs=1, dtype="float32")
    result = train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "ckpt", seed=0, quiet=True)
    assert result.steps == 6 and not result.skipped
    assert result.losses[-1] < result.losses[0]
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "evalign_train.json").is_file()
    assert not list(tmp_path.glob(".ckpt.*"))  # no temporary directory left behind


def test_lora_trains_and_saves_a_merged_plain_checkpoint(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = TrainConfig(learning_rate=5e-3, epochs=2, batch_size=4, gradient_accumulation_steps=1, max_length=128,
                      beta=0.1, warmup_ratio=0.0, min_pairs=1, lora={"enabled": True, "r": 4, "alpha": 8},
                      dtype="float32")
    result = train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "lora", seed=0, quiet=True)
    assert result.losses[-1] < result.losses[0]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")  # no adapter config needed
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_too_few_pairs_skip_training_and_keep_the_policy(tiny_model_dir, tmp_path, caplog):
    cfg = TrainConfig(min_pairs=4)
    result = train_preference(str(tiny_model_dir), PAIRS[:2], cfg, tmp_path / "ckpt", quiet=True)
    assert result.skipped and result.checkpoint == str(tiny_model_dir)
    assert "only 2 preference pairs (< train.min_pairs=4); kept the previous policy" in caplog.text
    assert not (tmp_path / "ckpt").exists()


def test_training_is_seeded(tiny_model_dir, tmp_path):
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, batch_size=4, gradient_accumulation_steps=1, max_length=128,
                      warmup_ratio=0.0, min_pairs=1, dtype="float32")
    a = train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "a", seed=5, quiet=True)
    b = train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "b", seed=5, quiet=True)
    assert all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(a.losses, b.losses))


def test_disk_full_while_writing_a_checkpoint_leaves_nothing_half_written(tiny_model_dir, tmp_path, monkeypatch):
    import errno

    from transformers import PreTrainedModel

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, batch_size=4, gradient_accumulation_steps=1, max_length=128,
                      warmup_ratio=0.0, min_pairs=1, dtype="float32")
    from evalign.errors import EvalignError

    with pytest.raises(EvalignError, match=r"disk full while writing checkpoint .*ckpt; free space .* and rerun"):
        train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "ckpt", quiet=True)
    assert not (tmp_path / "ckpt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt")]
