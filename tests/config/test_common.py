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
