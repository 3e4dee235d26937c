from __future__ import annotations

import math
import re

import pytest

from evalign.config import TrainConfig
from evalign.solver.train import train_preference


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


def test_checkpointing_goes_by_the_field_the_installed_training_arguments_have():
    from dataclasses import dataclass

    from evalign.solver.train import checkpointing_field

    @dataclass
    class Before:  # transformers < 5.23
        gradient_checkpointing: bool = False

    @dataclass
    class After(Before):  # 5.23+: the new name, the old one a deprecated alias
        activation_checkpointing: bool | None = None

    assert checkpointing_field(Before) == "gradient_checkpointing"
    assert checkpointing_field(After) == "activation_checkpointing"


@pytest.mark.parametrize("loss", ["dpo", "ipo", "simpo", "orpo", "sppo"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_every_losss_trl_config_builds_under_the_installed_transformers(tmp_path, loss, checkpointing):
    from evalign.registry import LOSSES
    from evalign.solver.train import checkpointing_field, trainer_arguments

    cfg = TrainConfig(loss=loss, gradient_checkpointing=checkpointing, warmup_ratio=0.1, dtype="float32")
    args = LOSSES.get(loss).config(cfg, trainer_arguments(cfg, str(tmp_path), seed=3, quiet=True))
    # TRL turns checkpointing on by default; the config's value wins under either field name
    assert getattr(args, checkpointing_field()) is checkpointing
    assert args.gradient_checkpointing is checkpointing
    assert (args.learning_rate, args.seed, args.data_seed, args.beta) == (cfg.learning_rate, 3, 3, cfg.beta)
    assert args.get_warmup_steps(20) == 2 and not args.bf16


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_checkpoints_activations_when_asked(tiny_model_dir, tmp_path, monkeypatch, checkpointing):
    from transformers import PreTrainedModel

    switched = []
    set_checkpointing = PreTrainedModel._set_gradient_checkpointing

    def spy(self, *args, **kwargs):
        switched.append(kwargs.get("enable", args[0] if args else True))
        return set_checkpointing(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_set_gradient_checkpointing", spy)
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, batch_size=4, gradient_accumulation_steps=1, max_length=128,
                      warmup_ratio=0.0, min_pairs=1, dtype="float32", gradient_checkpointing=checkpointing)
    result = train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "ckpt", seed=0, quiet=True)
    assert result.steps == 2 and all(math.isfinite(x) for x in result.losses)
    assert (True in switched) is checkpointing


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


HUGE_LR = dict(learning_rate=1e6, epochs=2, batch_size=4, gradient_accumulation_steps=1, max_length=128,
               warmup_ratio=0.0, min_pairs=1, dtype="float32")


def test_a_diverging_training_is_an_error_and_keeps_no_checkpoint(tiny_model_dir, tmp_path):
    from evalign.errors import EvalignError

    with pytest.raises(EvalignError, match=r"training diverged at step \d+: (loss|grad_norm) (nan|inf); "
                                           r"lower solver.train.learning_rate \(now 1e\+06\)"):
        train_preference(str(tiny_model_dir), PAIRS, TrainConfig(**HUGE_LR), tmp_path / "ckpt", seed=0, quiet=True)
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary directory


def test_non_finite_weights_after_finite_losses_are_caught(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import TrainerCallback

    from evalign.errors import EvalignError
    from evalign.solver import train as train_mod

    class Poison(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kw):
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("inf")

    build = train_mod._trainer

    def poisoned(*a, **k):
        trainer = build(*a, **k)
        trainer.add_callback(Poison())
        return trainer

    monkeypatch.setattr(train_mod, "_trainer", poisoned)
    cfg = TrainConfig(**{**HUGE_LR, "learning_rate": 1e-3})
    with pytest.raises(EvalignError, match=r"training diverged at step 4: 1 weight tensors non-finite \(first: "):
        train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "ckpt", seed=0, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_launched_training_is_a_one_line_error(tiny_model_dir, tmp_path):
    from evalign.errors import EvalignError
    from evalign.solver.launch import launch_training

    accel = tmp_path / "cpu.yaml"
    accel.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: 'no'\n"
                     "use_cpu: true\ndebug: false\nnum_machines: 1\nmachine_rank: 0\nnum_processes: 1\n"
                     "main_training_function: main\n")
    cfg = TrainConfig(**HUGE_LR, launcher="accelerate", accelerate_config=str(accel))
    out = tmp_path / "run" / "checkpoints" / "it1"
    with pytest.raises(EvalignError) as info:
        launch_training(str(tiny_model_dir), PAIRS, cfg, out, seed=0, run_dir=tmp_path / "run", quiet=True)
    msg = str(info.value)
    assert re.fullmatch(r"training diverged at step \d+: (loss|grad_norm) (nan|inf); lower solver.train."
                        r"learning_rate \(now 1e\+06\) and rerun; no checkpoint was kept", msg), msg
    assert not (tmp_path / "run" / "checkpoints").exists() or not list((tmp_path / "run" / "checkpoints").iterdir())


def test_weights_fingerprint_finds_missing_truncated_and_changed_files(tmp_path, monkeypatch):
    from evalign.solver import train as train_mod

    ckpt = tmp_path / "c"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}" + b"w" * 64)
    (ckpt / "config.json").write_text("{}")
    fp = train_mod.weights_fingerprint(ckpt)
    assert list(fp) == ["model.safetensors"] and fp["model.safetensors"]["of"] == "file"
    assert train_mod.weights_problem(ckpt, fp) is None
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[:-1] + b"x")
    assert "changed since it was trained" in train_mod.weights_problem(ckpt, fp)
    (ckpt / "model.safetensors").write_bytes(data[:10])
    assert "has 10 bytes, 80 when trained" in train_mod.weights_problem(ckpt, fp)
    (ckpt / "model.safetensors").unlink()
    assert "holds no .safetensors weights" in train_mod.weights_problem(ckpt, fp)
    assert "is missing" in train_mod.weights_problem(tmp_path / "gone", fp)
    # big checkpoints: size and header only
    (ckpt / "model.safetensors").write_bytes(data)
    monkeypatch.setattr(train_mod, "FULL_HASH_BYTES", 10)
    big = train_mod.weights_fingerprint(ckpt)
    assert big["model.safetensors"]["of"] == "header" and train_mod.weights_problem(ckpt, big) is None

