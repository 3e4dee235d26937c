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
        # A shell without job control starts background commands with SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: give the child the default, as a terminal would.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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


SCRIPTED = [f"--set={k}={v}" for k, v in {
    "policy.model": "echo", "policy.backend": "scripted", "creator.model.model": "echo",
    "creator.model.backend": "scripted", "solver.reward.model.model": "echo",
    "solver.reward.model.backend": "scripted", "eval.judge.model": "echo", "eval.judge.backend": "scripted",
    "eval.winrate_limit": 2, "eval.mt_limit": 1, "eval.bootstrap_samples": 100}.items()]


def _immutable(path: Path, on: bool) -> None:
    """Make ``path`` (recursively) unwritable even for root: chmod, and chattr +i where root."""
    if os.geteuid() == 0 and not on:
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
    for p in [path, *path.rglob("*")]:
        p.chmod((0o555 if p.is_dir() else 0o444) if on else (0o755 if p.is_dir() else 0o644))
    if os.geteuid() == 0 and on:
        subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True)


@pytest.fixture
def read_only():
    made: list[Path] = []

    def make(path: Path) -> Path:
        _immutable(path, True)
        made.append(path)
        try:
            (path / ".probe").touch()
        except OSError:
            return path
        (path / ".probe").unlink()
        pytest.skip("cannot make a directory read-only here")

    yield make
    for p in made:
        _immutable(p, False)


def test_an_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_line_error(evalign("run", *SCRIPTED, "--set", "run.output_dir=afile", cwd=tmp_path))
    assert line == "error: run directory afile is a file, not a directory; set run.output_dir to another directory"


def test_a_read_only_output_dir(tmp_path, read_only):
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    line = one_line_error(evalign("run", *SCRIPTED, "--set", "run.output_dir=ro", cwd=tmp_path))
    assert line.startswith("error: run directory ro is not writable (") and "chmod -R u+w ro" in line


def _finished_store(run_dir: Path) -> None:
    from evalign.store import RunStore

    RunStore(run_dir).close()


def test_report_on_a_read_only_run_dir(tmp_path, read_only):
    _finished_store(tmp_path / "run")
    read_only(tmp_path / "run")
    line = one_line_error(evalign("report", "run", cwd=tmp_path))
    assert line.startswith("error: run directory run is not writable (")
    assert line.endswith("or report a writable copy of it")


def test_a_corrupt_run_db(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.db").write_bytes(b"this is not sqlite" * 100)
    for args, fix in ((["report", "bad"], "report a writable copy of it"),
                      (["run", *SCRIPTED, "--set", "run.output_dir=bad"], "set run.output_dir to another directory")):
        line = one_line_error(evalign(*args, cwd=tmp_path))
        assert line == ("error: run store bad/run.db cannot be read (file is not a database): it is corrupt or "
                        f"not an evalign store; move it away to start the run afresh, or {fix}")


def _checkpoint(path: Path, cut: int | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    save_file({"w": torch.zeros(64, 64)}, str(path / "model.safetensors"))
    if cut is not None:
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[:cut])
    return path


def test_eval_on_a_truncated_checkpoint_or_a_run_directory(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt", cut=4000)
    hf = [*SCRIPTED, "--set", "policy.backend=transformers", "--out", str(tmp_path / "out")]
    line = one_line_error(evalign("eval", "--model", str(ckpt), *hf, cwd=tmp_path))
    assert line.startswith(f"error: --model: model '{ckpt}': {ckpt / 'model.safetensors'} is truncated or corrupt (")
    assert line.endswith("copy the checkpoint again or pass another one")

    run = tmp_path / "run"
    _finished_store(run)
    good = _checkpoint(run / "checkpoints" / "eva-s0-it1")
    line = one_line_error(evalign("eval", "--model", str(run), *hf, cwd=tmp_path))
    assert line == f"error: --model: model '{run}': this is a run directory; pass one of its checkpoints: {good}"
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_an_empty_policy_model(tmp_path):
    line = one_line_error(evalign("run", "--set", "policy.model=", "--set", "run.output_dir=r", cwd=tmp_path))
    assert line.startswith("error: policy.model is empty; name a built-in model (smollm2-135m-instruct")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, content, expected", [
    ("prompts.csv", b"id,prompt\n1,Explain tides\n", "prompts.csv: .csv files are not read; convert it to JSONL"),
    ("prompts.jsonl", b"\x00\x01\x02binary\xff\xfe" * 50, "prompts.jsonl: a binary file, not text; give JSONL"),
])
def test_a_csv_or_binary_file_as_winrate_prompts(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    line = one_line_error(evalign("eval", "--model", "echo", *SCRIPTED, "--set", f"eval.winrate_prompts={name}",
                                  "--out", "out", cwd=tmp_path))
    assert line.startswith(f"error: eval.winrate_prompts {expected}")


def test_a_typo_in_the_judge_fails_before_the_first_stage(tmp_path):
    out = evalign("run", *SCRIPTED, "--set", "eval.judge.model=qwen2.5-coder-1.5b-instrct",
                  "--set", "eval.judge.backend=auto", "--set", "run.output_dir=r", cwd=tmp_path)
    line = one_line_error(out)
    assert line == ("error: eval.judge.model: model 'qwen2.5-coder-1.5b-instrct' is not a built-in model (did you "
                    "mean 'qwen2.5-coder-1.5b-instruct'?), a local path, or a downloaded hub id; fix the name")
    assert not (tmp_path / "r").exists()  # no stage ran, no run directory was made


def test_report_on_a_half_finished_study_names_what_is_missing(tmp_path):
    from evalign.report.record import ArmRecord, SeedRecord, StudyRecord
    from evalign.store import RunStore

    with RunStore(tmp_path / "run") as store:
        store.save_config("eval:\n  enabled: true\n", {})
        study = StudyRecord(arms={"eva": ArmRecord("eva", {}, {"0": SeedRecord("p1", "ckpt")})}, single=True,
                            default_arm="eva", baseline_arm="no-creator")
        with store.transaction():
            store.set_meta("study", study.to_json())
    out = evalign("report", "run", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (tmp_path / "run" / "report" / "report.html").is_file()  # what there is, is reported
    assert out.stderr.strip() == (
        "error: the report of run is incomplete, its table lacks the evaluation of eva seed 0: "
        "win_rate_vs_theta0, score; theta0: score; finish the run (rerun the command that started it), "
        "then report again")


def test_a_model_named_only_by_an_ablation_arm_is_resolved_before_the_first_stage(tmp_path):
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump({"ablation": {"arms": [
        {"name": "ok", "set": {}},
        {"name": "typo", "set": {"creator.model.model": "smollm2-135m-instrct", "creator.model.backend": "auto"}},
    ]}}))
    line = one_line_error(evalign("ablate", str(cfg), *SCRIPTED, "--set", "run.output_dir=r", cwd=tmp_path))
    assert line.startswith("error: creator.model.model: model 'smollm2-135m-instrct' is not a built-in model "
                           "(did you mean 'smollm2-135m-instruct'?)")
    assert not (tmp_path / "r").exists()


def test_a_bare_command_prints_its_help_without_a_traceback():
    out = evalign()
    assert out.returncode == 2 and "Usage" in out.stdout and out.stderr.strip() == ""


def test_an_interrupt_between_stages_names_the_last_finished_one(tmp_path, monkeypatch):
    """An evaluation answers and judges before its eval stages: a Ctrl-C there is after the last
    stage this process finished, not before its first."""
    from evalign import cli
    from evalign.store import RunStore

    monkeypatch.setitem(cli._CONTEXT, "run_dir", tmp_path / "run")
    monkeypatch.setitem(cli._CONTEXT, "started", time.time() - 1)
    with RunStore(tmp_path / "run") as store:
        assert cli._where_stopped() == f" before its first stage in run directory {tmp_path / 'run'}"
        store.begin_stage("k1", "train", "eva", 2)
        store.finish_stage("k1", {}, 1.0)
        assert cli._where_stopped() == f" after stage train (arm eva, iteration 2) in run directory {tmp_path / 'run'}"
        store.begin_stage("k2", "eval_score", "eva", 0)
        assert cli._where_stopped() == f" during stage eval_score (arm eva) in run directory {tmp_path / 'run'}"
