"""The command line fails loudly: interrupts, usage errors and unusable run directories are
one line naming the thing and the fix, with exit status 130/143 or 2, never a traceback."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fake_openai_server import FakeOpenAIServer

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "EVALIGN_QUIET": "1", "PYTHONPATH": SRC + (os.pathsep + path if path else "")}


def evalign(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "evalign.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=_env())


def one_line_error(out, code: int = 2) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code and len(lines) == 1, (out.returncode, out.stderr)
    return lines[0]


def api_config(tmp_path: Path, url: str) -> Path:
    """A run whose policy is a (slow) fake API: the first generation stage blocks on it."""
    api = {"backend": "openai", "api_base": url, "max_retries": 0, "max_concurrency": 1, "timeout_s": 600}
    scripted = {"model": "echo", "backend": "scripted"}
    cfg = {
        "run": {"name": "sig", "output_dir": str(tmp_path / "run")},
        "policy": {"model": "slow-policy", **api},
        "prompts": {"source": "builtin:seed", "limit": 2},
        "creator": {"model": scripted},
        "solver": {"reward": {"kind": "judge_pointwise", "model": scripted}},
        "eval": {"judge": scripted},
    }
    path = tmp_path / "sig.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _wait_for_running_stage(db: Path, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.is_file():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                    row = con.execute("SELECT name FROM stages WHERE status = 'running'").fetchone()
            except sqlite3.OperationalError:
                row = None
            if row:
                return row[0]
        time.sleep(0.2)
    raise AssertionError("no stage started")


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_an_interrupted_run_says_where_it_stopped_and_how_to_resume(tmp_path, sig, code, name):
    with FakeOpenAIServer(default_delay=300) as srv:
        cfg = api_config(tmp_path, srv.url)
        argv = [sys.executable, "-m", "evalign.cli", "run", str(cfg), "--quiet"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                cwd=tmp_path)
        try:
            stage = _wait_for_running_stage(tmp_path / "run" / "run.db", proc)
            while not srv.requests:  # the policy's request is in flight
                time.sleep(0.1)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted by {name} during stage {stage}")
    assert f"in run directory {tmp_path / 'run'}" in line
    assert line.endswith(f"resume with: python -m evalign.cli run {cfg} --quiet")


@pytest.mark.parametrize("args, expected", [
    (["run", "--bogus"], "No such option: --bogus"),
    (["eval"], "Missing option '--model'"),
    (["ablate", "--seeds", "0"], "Invalid value for '--seeds'"),
])
def test_usage_errors_are_one_line_with_exit_2(args, expected):
    line = one_line_error(evalign(*args))
    assert line.startswith("error: ") and expected in line and "--help" in line
