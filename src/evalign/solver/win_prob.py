"""Win probabilities for SPPO: how likely each of a prompt's k samples beats the others.

SPPO regresses a response's policy/reference log-ratio onto (P(y beats pi | x) - 1/2) / beta,
where P(y beats pi | x) is the response's win probability against the policy's own samples. It
is estimated over the other k - 1 samples of the same prompt:

    P_i = mean over j != i of P(y_i beats y_j)

``bradley_terry`` takes P(y_i beats y_j) = sigmoid((r_i - r_j) / T) from pointwise rewards.
With T = 1 that is exactly the preference a Bradley-Terry reward model (a classifier trained on
pairs; its rewards are logits) assigns. A judge's 1-10 grades are not logits: a one-grade gap
already gives sigmoid(1) = 0.73, and ``solver.train.sppo_temperature`` rescales it (T = 2 makes
one grade 0.62). The estimate is increasing in a sample's own reward, so the best-reward sample
has the highest P and the worst the lowest: the pair best-vs-worst is also SPPO's
highest-vs-lowest win probability pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from evalign.config import TrainConfig
from evalign.errors import ConfigError

WinProbs = Callable[[Sequence[float | None]], list[float | None]]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def bradley_terry(rewards: Sequence[float | None], temperature: float = 1.0) -> list[float | None]:
    """Each sample's mean Bradley-Terry win probability against the prompt's other samples.

    A sample whose reward is missing or not finite gets None and is left out of the others'
    means; with fewer than two finite rewards every sample gets None.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    finite = [i for i, r in enumerate(rewards) if r is not None and math.isfinite(r)]
    out: list[float | None] = [None] * len(rewards)
    if len(finite) < 2:
        return out
    for i in finite:
        wins = [_sigmoid((rewards[i] - rewards[j]) / temperature) for j in finite if j != i]
        out[i] = sum(wins) / len(wins)
    return out


def estimator(cfg: TrainConfig) -> WinProbs | None:
    """The win-probability estimate the config asks for; None when the loss needs none."""
    if cfg.loss != "sppo":
        return None
    if cfg.sppo_win_prob == "bradley_terry":
        temperature = cfg.sppo_temperature
        return lambda rewards: bradley_terry(rewards, temperature)
    raise ConfigError(f"solver.train.sppo_win_prob: {cfg.sppo_win_prob!r} is not built yet; use bradley_terry")


def estimate_key(cfg: TrainConfig) -> dict | None:
    """What the estimate depends on, for the pairs stage's key (None when no estimate is made)."""
    if cfg.loss != "sppo":
        return None
    return {"method": cfg.sppo_win_prob, "temperature": cfg.sppo_temperature}
