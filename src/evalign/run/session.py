"""Opening a run: the store (locked), the resolved config and versions, logs, models."""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
from collections.abc import Iterator
from dataclasses import dataclass

from evalign.backends.budget import Budget
from evalign.config import Config
from evalign.eval.evaluator import Evaluator
from evalign.backends.pool import ModelPool
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
    store = RunStore(cfg.run_dir)
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
