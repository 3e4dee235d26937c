"""Config sections refuse non-finite numbers: one config error naming the field."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from evalign.config import validate
from evalign.errors import ConfigError


@pytest.mark.parametrize("path, value", [
    ("solver.train.learning_rate", float("inf")),
    ("solver.train.epochs", float("inf")),
    ("solver.train.beta", float("nan")),
    ("solver.train.warmup_ratio", float("-inf")),
    ("solver.sampling.temperature", float("nan")),
    ("creator.sample_fraction", float("nan")),
    ("policy.timeout_s", float("inf")),
    ("budget.max_cost_usd", float("inf")),
])
def test_inf_and_nan_are_config_errors(path, value):
    data: dict = {}
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    if path.startswith("policy."):
        data["policy"]["model"] = "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match=rf"{path}: Input should be a finite number"):
        validate(data)


@pytest.mark.parametrize("how", ["yaml", "set"])
def test_an_inf_learning_rate_is_one_line_exit_2(tmp_path, how):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("solver:\n  train:\n    learning_rate: .inf\n")
    # `config` validates like `run` without starting one (an accepted value prints the config).
    args = [str(cfg)] if how == "yaml" else ["--set", "solver.train.learning_rate=.inf"]
    out = subprocess.run([sys.executable, "-m", "evalign.cli", "config", *args], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env={**os.environ, "EVALIGN_QUIET": "1"})
    assert out.returncode == 2
    assert "solver.train.learning_rate" in out.stderr and "finite" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_vllm_memory_share_defaults_to_room_for_a_second_model():
    from evalign.config import ModelSpec
    from evalign.config.common import DEFAULT_GPU_MEMORY_UTILIZATION

    share = ModelSpec(model="org/m").gpu_memory_utilization
    assert share == DEFAULT_GPU_MEMORY_UTILIZATION == 0.45
    assert 2 * share <= 0.9  # two engines at the default on one GPU, ~10% left for CUDA contexts
    assert share * 80 + 20 <= 0.9 * 80  # or one engine beside a bf16 8B reward model (~20 GB) on 80 GB


@pytest.mark.parametrize("value", [0, -0.1, 1.01])
def test_a_vllm_memory_share_outside_0_1_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"^config: policy\.gpu_memory_utilization: Input should be") as e:
        validate({"policy": {"model": "org/m", "backend": "vllm", "gpu_memory_utilization": value}})
    assert "\n" not in str(e.value)


def _vllm(model: str, share: float, **kw) -> dict:
    return {"model": model, "backend": "vllm", "gpu_memory_utilization": share, **kw}


def test_in_process_vllm_engines_must_fit_one_gpu_together():
    with pytest.raises(ConfigError) as e:
        validate({"policy": _vllm("org/p", 0.6), "solver": {"reward": {"model": _vllm("org/j", 0.5)}}})
    msg = str(e.value)
    assert msg == ("config: in-process vLLM engines share one GPU: gpu_memory_utilization 0.6 (policy) + "
                   "0.5 (solver.reward.model) = 1.1 > 1; lower them to sum to at most 1 (e.g. 0.45 each) "
                   "or use run.executor: ray")
    # the defaults fit; one spec in several roles is one engine; Ray places them itself; tp > 1 is not one GPU
    validate({"policy": _vllm("org/p", 0.45), "solver": {"reward": {"model": _vllm("org/j", 0.45)}}})
    validate({"policy": _vllm("org/p", 0.45), "creator": {"model": _vllm("org/j", 0.5)},
              "solver": {"reward": {"model": _vllm("org/j", 0.5)}}, "eval": {"judge": _vllm("org/j", 0.5)}})
    validate({"run": {"executor": "ray"}, "policy": _vllm("org/p", 0.9),
              "solver": {"reward": {"model": _vllm("org/j", 0.9)}}})
    validate({"policy": _vllm("org/p", 0.9, tensor_parallel_size=2),
              "solver": {"reward": {"model": _vllm("org/j", 0.9)}}})


@pytest.mark.parametrize("key, value, why", [
    ("temperature", 2.5, "less than or equal to 2"),  # vLLM: "temperature must be in [0, 2]"
    ("temperature", -0.1, "greater than or equal to 0"),
    ("top_p", 0.0, "greater than 0"),  # vLLM: "top_p must be in (0, 1]"
    ("top_p", 1.5, "less than or equal to 1"),
    ("max_new_tokens", 0, "greater than or equal to 1"),  # vLLM: max_tokens at least 1
])
def test_sampling_outside_what_every_backend_takes_is_a_one_line_config_error(key, value, why):
    for section in ("solver.sampling", "creator.sampling", "eval.answer_sampling"):
        data: dict = {}
        node = data
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[key] = value
        with pytest.raises(ConfigError, match=rf"^config: {section}\.{key}: Input should be {why}") as e:
            validate(data)
        assert "\n" not in str(e.value)


def test_the_sampling_bounds_themselves_are_accepted():
    from evalign.config import SamplingConfig
    from evalign.config.common import MAX_TEMPERATURE

    assert MAX_TEMPERATURE == 2.0
    SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=1)
    SamplingConfig(temperature=2.0, top_p=1e-6)
