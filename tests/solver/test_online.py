"""Online eva's solver phase (solver/online.py): TRL's RLOO/GRPO trainers on a tiny policy with a
reward function that is evalign's shape of reward model (prompts x grouped responses)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from evalign.config import OnlineConfig, SamplingConfig, TrainConfig
from evalign.solver.online import RolloutRecorder, Rollout, last_rewards, padded_buffer, train_online


def test_the_buffer_is_padded_with_its_own_prompts_to_whole_steps():
    assert padded_buffer([1, 2, 3, 4], 2, seed=0) == [1, 2, 3, 4]
    padded = padded_buffer([1, 2, 3, 4, 5], 4, seed=0)
    assert len(padded) == 8 and padded[:5] == [1, 2, 3, 4, 5] and set(padded[5:]) <= {1, 2, 3, 4, 5}
    assert len(set(padded[5:])) == 3  # no prompt padded twice while others wait
    assert padded_buffer([7], 3, seed=1) == [7, 7, 7]
    assert padded_buffer([1, 2, 3], 2, seed=5) == padded_buffer([1, 2, 3], 2, seed=5)


def test_the_recorder_scores_each_prompts_rollouts_together_and_keeps_them():
    seen = []

    def score(prompts, responses):
        seen.append((list(prompts), [list(r) for r in responses]))
        return [[float(len(r)) for r in rs] for rs in responses]

    rec = RolloutRecorder(score, {10: "ten", 20: "twenty"})
    completions = [[{"role": "assistant", "content": c}] for c in ("a", "bbb", "cc", "dddd")]
    out = rec(prompts=None, completions=completions, prompt_id=[10, 10, 20, 20],
              trainer_state=SimpleNamespace(global_step=3))
    assert out == [1.0, 3.0, 2.0, 4.0]
    assert seen == [(["ten", "twenty"], [["a", "bbb"], ["cc", "dddd"]])]
    assert rec.rollouts == [Rollout(10, 3, 0, "a", 1.0), Rollout(10, 3, 1, "bbb", 3.0),
                            Rollout(20, 3, 0, "cc", 2.0), Rollout(20, 3, 1, "dddd", 4.0)]
    assert rec.__name__ == "evalign_reward" and rec.calls == 4


def test_informativeness_reads_each_prompts_last_rollouts():
    rollouts = [Rollout(1, 0, 0, "x", 1.0), Rollout(1, 0, 1, "y", 2.0),
                Rollout(2, 0, 1, "z", 5.0), Rollout(2, 0, 0, "w", 4.0),
                Rollout(1, 4, 1, "v", 9.0), Rollout(1, 4, 0, "u", 8.0)]
    assert last_rewards(rollouts, [2, 1, 3]) == [[4.0, 5.0], [8.0, 9.0], []]


def _phase(tmp_path, tiny_model_dir, name, algorithm="rloo", prompts=None, **online):
    def score(texts, responses):  # longer answers score higher: a signal a step can follow
        return [[min(len(r), 40) / 10.0 for r in rs] for rs in responses]

    cfg = OnlineConfig(algorithm=algorithm, learning_rate=1e-3, prompts_per_step=2, **online)
    train = TrainConfig(dtype="float32")
    prompts = prompts or [(1, "Name a colour."), (2, "Say hello."), (3, "Count to three.")]
    return train_online(str(tiny_model_dir), prompts, score, cfg, train,
                        SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=1.0), 3, tmp_path / name, seed=7,
                        quiet=True)


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_a_phase_trains_the_policy_on_its_rollouts_and_writes_a_checkpoint(tmp_path, tiny_model_dir, algorithm):
    from safetensors.torch import load_file

    result = _phase(tmp_path, tiny_model_dir, algorithm, algorithm)
    out = tmp_path / algorithm
    assert result.checkpoint == str(out) and not result.skipped
    assert result.steps == 2  # 3 prompts padded to 4, 2 per step
    # every prompt rolled out (k = 3 each, the padded one twice), every rollout with its reward
    assert {r.prompt_id for r in result.rollouts} == {1, 2, 3} and len(result.rollouts) == 4 * 3
    assert all(math.isfinite(r.reward) for r in result.rollouts)
    assert result.mean_rewards and all(math.isfinite(v) for v in result.mean_rewards)
    record = json.loads((out / "evalign_online.json").read_text())
    assert record["algorithm"] == algorithm and record["k"] == 3 and record["steps"] == 2
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert any(not (before[k] == after[k]).all() for k in before)  # the weights moved
    assert not (out / "_trainer").exists()


def test_a_phase_is_deterministic_given_its_seed(tmp_path, tiny_model_dir):
    a = _phase(tmp_path, tiny_model_dir, "a")
    b = _phase(tmp_path, tiny_model_dir, "b")
    assert a.rollouts == b.rollouts and a.losses == pytest.approx(b.losses)


def test_an_empty_buffer_keeps_the_policy(tmp_path, tiny_model_dir):
    result = train_online(str(tiny_model_dir), [], lambda t, r: [], OnlineConfig(), TrainConfig(),
                          SamplingConfig(), 2, tmp_path / "x")
    assert result.skipped and result.checkpoint == str(tiny_model_dir) and not (tmp_path / "x").exists()


def test_a_diverged_phase_names_the_online_learning_rate():
    from evalign.solver.train import DivergedError

    msg = str(DivergedError(OnlineConfig(learning_rate=0.5), 3, "loss nan"))
    assert "lower solver.online.learning_rate (now 0.5)" in msg and "step 3" in msg
    assert "solver.train.learning_rate" in str(DivergedError(TrainConfig(), 1, "loss nan"))


def test_online_mode_needs_two_rollouts_per_prompt():
    from evalign.config import validate
    from evalign.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="num_samples >= 2"):
        validate({"solver": {"mode": "online", "num_samples": 1}})
