"""Preference losses: which TRL config and trainer each ``solver.train.loss`` name runs.

One ``PreferenceLoss`` per name, registered in ``evalign.registry.LOSSES`` (the config's
choices for ``solver.train.loss``). ``solver/train.py`` builds the trainer from it. TRL is
imported only when a trainer is built, so the config can list the names cheaply.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evalign.config import TrainConfig
from evalign.registry import LOSSES


def _no_options(cfg: TrainConfig) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class PreferenceLoss:
    """A loss name mapped onto TRL: ``module.config_class(loss_type=..., **options(cfg))``."""

    name: str
    module: str  # where TRL keeps the two classes
    config_class: str
    trainer_class: str
    loss_type: str | tuple[str, ...] | None  # TRL's loss_type; a tuple goes as a list; None: not passed
    options: Callable[[TrainConfig], dict[str, Any]] = field(default=_no_options)
    packable: bool = False  # solver/packing.py's packed forward applies (DPOTrainer and its subclasses)

    def config(self, cfg: TrainConfig, common: dict[str, Any]):
        """TRL's config for this loss, with ``common`` (the arguments every loss shares)."""
        mod = importlib.import_module(self.module)
        extra: dict[str, Any] = {}
        if self.loss_type is not None:
            extra["loss_type"] = list(self.loss_type) if isinstance(self.loss_type, tuple) else self.loss_type
        return getattr(mod, self.config_class)(**extra, **self.options(cfg), **common)

    def build(self, cfg: TrainConfig, common: dict[str, Any], **trainer_kwargs: Any):
        """The trainer, with ``common`` (the arguments every loss shares) in its config."""
        mod = importlib.import_module(self.module)
        trainer_cls = getattr(mod, self.trainer_class)
        if self.packable and cfg.packed_batches:
            from evalign.solver.packing import packed_dpo_trainer_class

            trainer_cls = packed_dpo_trainer_class(trainer_cls)
        return trainer_cls(args=self.config(cfg, common), **trainer_kwargs)


def _reference_options(cfg: TrainConfig) -> dict[str, Any]:
    return {"precompute_ref_log_probs": cfg.precompute_ref_logprobs}


def _simpo_options(cfg: TrainConfig) -> dict[str, Any]:
    # SimPO is CPO's simpo loss with the behaviour-cloning term off (cpo_alpha 0).
    return {"cpo_alpha": 0.0, "simpo_gamma": cfg.simpo_gamma}


for _loss in (
    PreferenceLoss("dpo", "trl", "DPOConfig", "DPOTrainer", ("sigmoid",), _reference_options, packable=True),
    PreferenceLoss("ipo", "trl", "DPOConfig", "DPOTrainer", ("ipo",), _reference_options, packable=True),
    # SPPO: a DPOTrainer subclass with SPPO's loss (TRL's loss_type is not read); the win
    # probabilities come with the pairs (solver/win_prob.py)
    PreferenceLoss("sppo", "evalign.solver.sppo", "DPOConfig", "SPPOTrainer", None, _reference_options, packable=True),
    PreferenceLoss("simpo", "trl.experimental.cpo", "CPOConfig", "CPOTrainer", "simpo", _simpo_options),
    PreferenceLoss("orpo", "trl.experimental.orpo", "ORPOConfig", "ORPOTrainer", None),
):
    LOSSES.register(_loss.name, _loss)
