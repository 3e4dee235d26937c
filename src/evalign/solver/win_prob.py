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

``pairwise`` asks a pairwise judge (the reward's judge; the SPPO authors use PairRM) for
P(y_i beats y_j) directly, both orders combined by the judge variant's rule, for the pair's
chosen and rejected responses against each of the prompt's other scored samples. The pairs stay
best-vs-worst by reward; only their P comes from the judge (run/loop.py's ``win_prob_*`` stages,
whose judgments are cached in the run store like every other).
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


def judge_pairwise(judge, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                   rewards: Sequence[Sequence[float | None]], wanted: Sequence[Sequence[int]]) -> list[dict[int, float]]:
    """For prompt ``i`` and each sample index in ``wanted[i]``: the mean over the prompt's other
    samples with a finite reward of P(that sample beats it), as ``judge`` (a judge/judge.Judge)
    says comparing both orders; an undecided comparison counts 0.5. One batched call to the
    judge for every prompt; each unordered pair is judged once."""
    from evalign.judge.verdicts import PairItem

    items, where = [], []
    others: list[list[int]] = []
    for i, (p, rs, scores) in enumerate(zip(prompts, responses, rewards)):
        finite = [j for j, r in enumerate(scores) if r is not None and math.isfinite(r)]
        others.append(finite)
        for a, b in sorted({(min(a, b), max(a, b)) for a in wanted[i] for b in finite if b != a}):
            items += [PairItem(p, rs[a], rs[b]), PairItem(p, rs[b], rs[a])]
            where.append((i, a, b))
    verdicts = judge.compare(items, description="judging win probabilities") if items else []
    beats: dict[tuple[int, int, int], float] = {}
    for n, (i, a, b) in enumerate(where):
        p = judge.combine(verdicts[2 * n].p_a, verdicts[2 * n + 1].p_a, items[2 * n])
        p = 0.5 if p is None else float(p)
        beats[(i, a, b)], beats[(i, b, a)] = p, 1.0 - p
    out = []
    for i, targets in enumerate(wanted):
        row = {}
        for a in targets:
            wins = [beats[(i, a, b)] for b in others[i] if b != a]
            if wins:
                row[a] = sum(wins) / len(wins)
        out.append(row)
    return out


def judge_identity(judge) -> str:
    """What a judge's pairwise verdicts depend on, for the ``win_prob_*`` stage keys."""
    return f"{judge.judge_id}:{judge.pair_version}:{judge.mode}:{judge.max_answer_tokens}"


def estimator(cfg: TrainConfig) -> WinProbs | None:
    """The reward-only win-probability estimate the config asks for (bradley_terry); None when
    the loss needs none or the estimate is a pairwise judge's (``judged``)."""
    if cfg.loss != "sppo" or cfg.sppo_win_prob != "bradley_terry":
        return None
    temperature = cfg.sppo_temperature
    return lambda rewards: bradley_terry(rewards, temperature)


def judged(cfg: TrainConfig) -> bool:
    """Whether the win probabilities come from a pairwise judge (run/loop.py asks it)."""
    return cfg.loss == "sppo" and cfg.sppo_win_prob == "pairwise"


def estimate_key(cfg: TrainConfig) -> dict | None:
    """What the estimate depends on, for the pairs stage's key (None when no estimate is made);
    a judged estimate's stages add their own keys."""
    if cfg.loss != "sppo":
        return None
    if cfg.sppo_win_prob == "pairwise":
        return {"method": "pairwise"}
    return {"method": cfg.sppo_win_prob, "temperature": cfg.sppo_temperature}


def needs_judge_error(kind: str) -> ConfigError:
    return ConfigError(f"solver.train.sppo_win_prob: pairwise needs a judge reward (solver.reward.kind "
                       f"judge_pointwise or judge_pairwise_anchor), whose judge compares the samples; "
                       f"{kind!r} has none")
