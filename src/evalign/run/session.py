"""Opening a run: the store (locked), the resolved config and versions, logs, models."""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import logging
import os
import platform
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalign.backends.budget import Budget
from evalign.config import Config, ModelSpec
from evalign.eval.evaluator import Evaluator
from evalign.backends.pool import ModelPool
from evalign.errors import ConfigError, EvalignError, ModelNotFoundError, RunInUseError
from evalign.progress import setup_logging
from evalign.store import RunStore

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ("evalign", "torch", "transformers", "trl", "peft", "llama_cpp_python", "vllm", "datasets")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def model_specs(cfg: Config) -> list[tuple[str, ModelSpec]]:
    """Every model a run config names, with its key."""
    return [("policy", cfg.policy), ("creator.model", cfg.creator.model),
            ("solver.reward.model", cfg.solver.reward.model), ("eval.judge", cfg.eval.judge)]


def check_models(cfg: Config) -> None:
    """Resolve every model of the config before the first stage: a typo in the judge fails
    now, not after an iteration of training. Loads nothing."""
    for key, spec in model_specs(cfg):
        check_model(spec, key)


def check_model(spec: ModelSpec, key: str) -> None:
    """One model: its backend is registered and installed, its name resolves (one-line errors
    naming ``key``)."""
    import importlib.util

    from evalign import weights
    from evalign.backends import backend_info, resolve_backend

    name = key if key.startswith("--") else f"{key}.model"  # a command-line flag, or a config key
    if not spec.model.strip():
        raise ConfigError(f"{name} is empty; name a built-in model ({', '.join(weights.BUILTIN_MODELS)}), "
                          "a local checkpoint path or a hub id like 'org/name'")
    backend = resolve_backend(spec)
    requires = backend_info(backend).requires
    if requires is not None and importlib.util.find_spec(requires) is None:
        raise ConfigError(f"{key}: backend {backend} needs the Python package {requires!r}, which is not "
                          f"installed; install it or choose another backend for {key}")
    try:
        weights.check_model_name(spec.model, backend)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{name}: {exc}") from None


def warn_remote_code(specs: list[tuple[str, ModelSpec]]) -> None:
    """A warning naming every model whose own Python code will run (trust_remote_code)."""
    for key, spec in specs:
        if spec.trust_remote_code:
            log.warning("%s.trust_remote_code is on: loading model '%s' runs Python code shipped with it; "
                        "turn it off unless you trust that code", key, spec.model)


OTHER_DIR = "set run.output_dir to another directory"


def open_store(run_dir: str | os.PathLike[str], *, readonly: bool = False, elsewhere: str = OTHER_DIR) -> RunStore:
    """``RunStore(run_dir)``; a directory that cannot hold a run is a one-line error naming it.

    ``elsewhere`` is the fix that avoids the directory (in the message)."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise EvalignError(f"run directory {path} is a file, not a directory; {elsewhere}")
    try:
        return RunStore(path, readonly=readonly)
    except RunInUseError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise EvalignError(not_writable(path, exc.strerror or str(exc), elsewhere)) from None
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            raise EvalignError(f"run directory {path}: a parent is a file ({exc.strerror}); {elsewhere}") from None
        raise
    except sqlite3.DatabaseError as exc:
        raise EvalignError(store_error(path, exc, elsewhere)) from None


def not_writable(path: Path, why: str, elsewhere: str = OTHER_DIR) -> str:
    return f"run directory {path} is not writable ({why}); make it writable (chmod -R u+w {path}) or {elsewhere}"


def store_error(path: Path, exc: sqlite3.DatabaseError, elsewhere: str = OTHER_DIR) -> str:
    """The one-line message for a run store SQLite cannot open or write."""
    text = str(exc)
    if "readonly" in text or "unable to open" in text or "read-only" in text:
        return not_writable(path, text, elsewhere)
    return (f"run store {path / 'run.db'} cannot be read ({text}): it is corrupt or not an evalign store; "
            f"move it away to start the run afresh, or {elsewhere}")


@dataclass
class Session:
    cfg: Config
    store: RunStore
    pool: ModelPool
    evaluator: Evaluator | None


@contextlib.contextmanager
def open_run(cfg: Config, *, verbose: bool = False, with_eval: bool = True) -> Iterator[Session]:
    """Lock the run directory, record the config and versions, and build the model pool."""
    check_models(cfg)
    store = open_store(cfg.run_dir)
    try:
        setup_logging(cfg.run_dir, verbose=verbose)
        warn_remote_code(model_specs(cfg))
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
