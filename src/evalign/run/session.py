"""Opening a run: the store (locked), the resolved config and versions, logs, models."""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import os
import platform
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalign.backends.budget import Budget
from evalign.config import Config
from evalign.eval.evaluator import Evaluator
from evalign.backends.pool import ModelPool
from evalign.errors import EvalignError, RunInUseError
from evalign.progress import setup_logging
from evalign.store import RunStore

TRACKED_PACKAGES = ("evalign", "torch", "transformers", "trl", "peft", "llama_cpp_python", "vllm", "datasets")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def open_store(run_dir: str | os.PathLike[str], *, readonly: bool = False, what: str = "run.output_dir") -> RunStore:
    """``RunStore(run_dir)``; a directory that cannot hold a run is a one-line error naming it.

    ``what`` names the setting that chose the directory (for the fix in the message)."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise EvalignError(f"run directory {path} is a file, not a directory; set {what} to a directory path")
    try:
        return RunStore(path, readonly=readonly)
    except RunInUseError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise EvalignError(not_writable(path, exc.strerror or str(exc), what)) from None
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            raise EvalignError(f"run directory {path}: a parent is a file ({exc.strerror}); "
                               f"set {what} to a directory path") from None
        raise
    except sqlite3.DatabaseError as exc:
        raise EvalignError(store_error(path, exc, what)) from None


def not_writable(path: Path, why: str, what: str = "run.output_dir") -> str:
    return (f"run directory {path} is not writable ({why}); make it writable "
            f"(chmod -R u+w {path}) or set {what} to another directory")


def store_error(path: Path, exc: sqlite3.DatabaseError, what: str = "run.output_dir") -> str:
    """The one-line message for a run store SQLite cannot open or write."""
    text = str(exc)
    if "readonly" in text or "unable to open" in text or "read-only" in text:
        return not_writable(path, text, what)
    return (f"run store {path / 'run.db'} cannot be read ({text}): it is corrupt or not an evalign store; "
            f"move it away to start the run afresh, or set {what} to another directory")


@dataclass
class Session:
    cfg: Config
    store: RunStore
    pool: ModelPool
    evaluator: Evaluator | None


@contextlib.contextmanager
def open_run(cfg: Config, *, verbose: bool = False, with_eval: bool = True) -> Iterator[Session]:
    """Lock the run directory, record the config and versions, and build the model pool."""
    from evalign import weights as models

    for spec in (cfg.policy, cfg.creator.model, cfg.solver.reward.model, cfg.eval.judge):
        models.check_model_name(spec.model, spec.backend)
    store = open_store(cfg.run_dir)
    try:
        setup_logging(cfg.run_dir, verbose=verbose)
        store.save_config(cfg.to_yaml(), versions())
        budget = Budget(cfg.budget, path=cfg.run_dir / "budget.json")
        pool = ModelPool(budget, executor=cfg.run.executor, ray_cfg=cfg.run.ray)
        evaluator = Evaluator(cfg.eval, store, pool) if with_eval and cfg.eval.enabled else None
        try:
            yield Session(cfg, store, pool, evaluator)
        finally:
            pool.close()
    finally:
        store.close()
