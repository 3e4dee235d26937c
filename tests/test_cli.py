"""The command line: one-line errors without tracebacks, and the small commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def evalign(*args, cwd=None, timeout=300):
    env = {**os.environ, "EVALIGN_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "evalign.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("creator:\n  metirc: gap\n", "unknown key 'creator.metirc'"),
        ("solver:\n  num_samples: lots\n", "solver.num_samples"),
        ("policy:\n  model: ./no/such/checkpoint\n", "no such file or directory"),
        ("run: [unclosed\n", "malformed YAML"),
    ],
)
def test_bad_configs_are_one_line_errors_without_traceback(tmp_path, yaml_text, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    out = evalign("run", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_config_command_prints_the_resolved_config():
    out = evalign("config", "--preset", "quickstart", "--set", "creator.metric=variance")
    assert out.returncode == 0
    assert "metric: variance" in out.stdout and "name: quickstart" in out.stdout


def test_presets_and_models_commands():
    out = evalign("presets")
    assert set(out.stdout.split()) >= {"quickstart", "cpu", "paper"}
    out = evalign("models")
    assert out.returncode == 0
    assert "smollm2-135m-instruct" in out.stderr + out.stdout
    assert "qwen2.5-coder-1.5b-instruct" in out.stderr + out.stdout


def test_unknown_arm_is_a_clear_error(tmp_path):
    out = evalign("ablate", "--preset", "quickstart", "--arm", "nope", "--set", f"run.output_dir={tmp_path}/r")
    assert out.returncode == 2 and "unknown arm(s) nope; arms of this study:" in out.stderr
    assert "Traceback" not in out.stderr


def test_report_of_a_directory_that_is_not_a_run(tmp_path):
    out = evalign("report", str(tmp_path))
    assert out.returncode == 2 and "is not an evalign run directory" in out.stderr
