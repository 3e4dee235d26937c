"""Training in its own processes under ``accelerate launch`` (``solver.train.launcher: accelerate``).

:func:`launch_training` is what the loop calls instead of ``train_preference`` when training
must span GPUs (DDP, DeepSpeed ZeRO-3, FSDP). It writes a job directory

    RUN_DIR/launch/<job hash>/
        pairs.jsonl     the preference pairs (prompt, chosen, rejected)
        job.json        base model path, TrainConfig, seed, output directory
        command.sh      the exact command (for other nodes of a multi-node job, and for rerunning by hand)
        train.log       everything the launched processes printed
        result.json     the TrainResult, written by rank 0 of ``evalign.solver.train_entry``

and runs, with the interpreter evalign runs under,

    python -m accelerate.commands.launch --config_file CFG --num_processes N \\
        [--num_machines M --machine_rank R --main_process_ip IP --main_process_port P] \\
        -m evalign.solver.train_entry RUN_DIR/launch/<hash>/job.json

(``python -m accelerate.commands.launch`` is ``accelerate launch`` of that interpreter, so the
job runs in evalign's environment whatever ``accelerate`` is first on PATH). ``CFG`` is a
shipped config (``ddp``, ``zero3``, ``fsdp`` in ``evalign/accelerate/``) or a path. The
bracketed flags are added from the environment variables ``EVALIGN_NUM_MACHINES``,
``EVALIGN_MACHINE_RANK``, ``EVALIGN_MAIN_PROCESS_IP`` and ``EVALIGN_MAIN_PROCESS_PORT`` when
set (multi-node; docs/scaling.md). The launched processes' output is streamed to the
console and the run's log; a non-zero exit is an :class:`EvalignError` carrying its tail.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from evalign.config import TrainConfig
from evalign.errors import ConfigError, EvalignError
from evalign.fsutil import atomic_write_text
from evalign.hashing import sha
from evalign.solver.train import PAIR_EXTRAS, TrainResult, train_preference

log = logging.getLogger(__name__)

SHIPPED_CONFIGS = ("ddp", "zero3", "fsdp")
#: Environment variable -> ``accelerate launch`` flag, for multi-node jobs.
MULTINODE_ENV = {
    "EVALIGN_NUM_MACHINES": "--num_machines",
    "EVALIGN_MACHINE_RANK": "--machine_rank",
    "EVALIGN_MAIN_PROCESS_IP": "--main_process_ip",
    "EVALIGN_MAIN_PROCESS_PORT": "--main_process_port",
}
ENTRY_MODULE = "evalign.solver.train_entry"
TAIL_LINES = 40
_PROGRESS = re.compile(r"^\s*[^|]*\d+%\|")  # tqdm bars: console only, not the run log


def accelerate_config_path(name: str) -> Path:
    """A shipped accelerate config by name (ddp | zero3 | fsdp) or a user's file."""
    if name in SHIPPED_CONFIGS:
        return Path(str(resources.files("evalign") / "accelerate" / f"{name}.yaml"))
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"solver.train.accelerate_config {name!r} is neither a shipped config "
            f"({', '.join(SHIPPED_CONFIGS)}) nor an existing file; name one or give a path to an accelerate YAML"
        )
    return path.resolve()


def build_command(job_path: str | os.PathLike[str], cfg: TrainConfig, *,
                  env: Mapping[str, str] | None = None, python: str | None = None) -> list[str]:
    """The argv that launches ``job_path`` (see the module docstring)."""
    env = os.environ if env is None else env
    argv = [python or sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config_path(cfg.accelerate_config)),
            "--num_processes", str(cfg.num_processes)]
    for var, flag in MULTINODE_ENV.items():
        value = env.get(var, "").strip()
        if value:
            argv += [flag, value]
    argv += ["-m", ENTRY_MODULE, str(job_path)]
    return argv


def job_hash(base_path: str, pairs: Sequence[dict], cfg: TrainConfig, out_dir: str, seed: int) -> str:
    head = json.dumps({"base": str(base_path), "train": cfg.key_dump(), "out": str(out_dir),
                       "seed": seed}, sort_keys=True)
    body = "".join(json.dumps([p["prompt"], p["chosen"], p["rejected"]]
                              + [p[k] for k in PAIR_EXTRAS if p.get(k) is not None], ensure_ascii=False)
                   for p in pairs)
    return sha(head + body, 16)


def write_job(job_dir: Path, base_path: str, pairs: Sequence[dict], cfg: TrainConfig, out_dir: str | os.PathLike[str],
              seed: int) -> Path:
    """Write pairs.jsonl and job.json into ``job_dir``; returns job.json's path."""
    job_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
                                **{k: p[k] for k in PAIR_EXTRAS if p.get(k) is not None}},
                               ensure_ascii=False) + "\n" for p in pairs)
    atomic_write_text(job_dir / "pairs.jsonl", lines)
    job = {
        "base_path": str(base_path),
        "pairs": str((job_dir / "pairs.jsonl").resolve()),
        "train": cfg.model_dump(mode="json"),
        "seed": int(seed),
        "out_dir": str(Path(out_dir).resolve()),
        "result": str((job_dir / "result.json").resolve()),
    }
    atomic_write_text(job_dir / "job.json", json.dumps(job, indent=1, ensure_ascii=False))
    return job_dir / "job.json"


def launch_training(
    base_path: str,
    pairs: Sequence[dict],
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
    run_dir: str | os.PathLike[str],
    quiet: bool | None = None,
) -> TrainResult:
    """Train ``base_path`` on ``pairs`` into ``out_dir`` under ``accelerate launch``."""
    if len(pairs) < cfg.min_pairs:  # nothing to launch: the same skip as in-process training
        return train_preference(base_path, pairs, cfg, out_dir, seed=seed)
    from evalign.progress import console, is_quiet

    quiet = is_quiet() if quiet is None else quiet
    job_dir = Path(run_dir) / "launch" / job_hash(base_path, pairs, cfg, str(out_dir), seed)
    result_path = job_dir / "result.json"
    if result_path.is_file() and Path(out_dir).is_dir():  # finished before the stage was marked done
        log.info("reusing finished training job %s", job_dir)
        return TrainResult(**json.loads(result_path.read_text(encoding="utf-8")))
    result_path.unlink(missing_ok=True)
    from evalign.solver.train_entry import error_path

    error_path(result_path).unlink(missing_ok=True)
    job_path = write_job(job_dir, base_path, pairs, cfg, out_dir, seed)
    argv = build_command(job_path, cfg)
    atomic_write_text(job_dir / "command.sh", "#!/bin/sh\n# other nodes: set EVALIGN_MACHINE_RANK first\n"
                      + shlex.join(argv) + "\n")
    log.info("launching training: %s", shlex.join(argv))
    if not quiet:
        console.print(f"  train: {shlex.join(argv)}", highlight=False, markup=False)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if quiet:
        env["EVALIGN_QUIET"] = "1"
    rc, tail = _run_streaming(argv, env, job_dir / "train.log", echo=not quiet)
    if rc != 0 and error_path(result_path).is_file():  # the job's own one-line error (e.g. training diverged)
        raise EvalignError(error_path(result_path).read_text(encoding="utf-8").strip())
    if rc != 0:
        shown = "\n".join(tail[-15:])
        raise EvalignError(
            f"training under accelerate failed (exit {rc}); last lines:\n{shown}\n"
            f"full output: {job_dir / 'train.log'}; rerun by hand with {job_dir / 'command.sh'}"
        )
    if not result_path.is_file():
        raise EvalignError(f"training under accelerate exited 0 but wrote no {result_path}; see {job_dir / 'train.log'}")
    return TrainResult(**json.loads(result_path.read_text(encoding="utf-8")))


def _run_streaming(argv: list[str], env: dict[str, str], log_path: Path, *, echo: bool) -> tuple[int, list[str]]:
    """Run ``argv``, copying each output line to ``log_path``, the run log and the console."""
    from evalign.progress import console

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env=env, start_new_session=True, bufsize=1)
    try:
        with open(log_path, "a", encoding="utf-8") as fh:
            assert proc.stdout is not None
            for raw in proc.stdout:  # text mode: "\r" of progress bars also ends a line
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                fh.write(line + "\n")
                fh.flush()
                if not _PROGRESS.match(line):
                    tail.append(line)
                    log.info("train | %s", line)
                if echo:
                    console.print(line, highlight=False, markup=False)
        return proc.wait(), list(tail)
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen) -> None:
    """End the launched process group (accelerate and every rank it started)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
