"""Win rate of a model against a baseline, judged pairwise in both orders.

Each prompt is judged twice, with the model's answer first and then second. The per-prompt
outcome is the model's win probability averaged over the two orders (ties and split
verdicts count half), so a judge that always prefers the first answer yields exactly 50%.
Discrete counts follow Arena-Hard: a win needs both orders to agree, a loss likewise, and
anything else is a tie. The length-controlled rate regresses out the answer-length
difference: AlpacaEval's own LC on AlpacaEval's instructions, a simplified one elsewhere
(eval/alpaca.py; ``lc_method`` says which). Prompts whose verdicts could not be parsed in either
order are counted and left out. ``arena_hard`` is Arena-Hard-Auto's own score of the same
verdicts (v0.1: battles per game, strong verdicts three-fold, game-level bootstrap; see
:mod:`evalign.eval.arena_hard`), a different number under its own name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from evalign.judge.judge import Judge
from evalign.judge.verdicts import pair_items
from evalign.eval import alpaca, stats
from evalign.eval.arena_hard import arena_hard_score, arena_label


@dataclass
class WinRate:
    estimate: stats.Estimate | None
    lc: stats.Estimate | None
    outcomes: list[float | None]
    wins: int = 0
    ties: int = 0
    losses: int = 0
    parse_failures: int = 0
    first_position_rate: float | None = None
    lengths_model: list[int] = field(default_factory=list)
    lengths_baseline: list[int] = field(default_factory=list)
    lc_method: str = alpaca.SIMPLIFIED_LC
    #: Arena-Hard v0.1's score and interval of these verdicts.
    arena_hard: stats.Estimate | None = None
    #: Per prompt, the Arena-Hard labels (model-first verdict, baseline-first verdict).
    labels: list[tuple[str | None, str | None]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(o is not None for o in self.outcomes)

    def as_dict(self) -> dict:
        return {"win_rate": stats.as_dict(self.estimate), "lc_win_rate": stats.as_dict(self.lc), "wins": self.wins, "ties": self.ties,
                "losses": self.losses, "parse_failures": self.parse_failures,
                "first_position_rate": self.first_position_rate, "outcomes": self.outcomes,
                "lengths_model": self.lengths_model, "lengths_baseline": self.lengths_baseline,
                "lc_method": self.lc_method,
                "arena_hard": stats.as_dict(self.arena_hard), "labels": [list(pair) for pair in self.labels]}


def judge_win_rate(
    judge: Judge,
    questions: Sequence[str],
    model_answers: Sequence[str],
    baseline_answers: Sequence[str],
    *,
    references: Sequence[str | None] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    description: str = "judging win rate",
    alpaca_reference: alpaca.AlpacaReference | None = None,
) -> WinRate:
    items = pair_items(questions, model_answers, baseline_answers, references)
    verdicts = judge.compare(items, description=description)
    outcomes: list[float | None] = []
    wins = ties = losses = failures = first = judged = 0
    for i in range(len(questions)):
        v1, v2 = verdicts[2 * i], verdicts[2 * i + 1]  # model first, model second
        ps = []
        if v1.p_a is not None:
            ps.append(v1.p_a)
            first += v1.p_a > 0.5
            judged += 1
        if v2.p_a is not None:
            ps.append(1.0 - v2.p_a)
            first += v2.p_a > 0.5
            judged += 1
        failures += int(v1.parse_failed) + int(v2.parse_failed)
        if not ps:
            outcomes.append(None)
            continue
        outcomes.append(judge.combine(v1.p_a, v2.p_a, items[2 * i]))  # the judge variant's rule
        if len(ps) == 2 and ps[0] > 0.5 and ps[1] > 0.5:
            wins += 1
        elif len(ps) == 2 and ps[0] < 0.5 and ps[1] < 0.5:
            losses += 1
        else:
            ties += 1
    valid = [i for i, o in enumerate(outcomes) if o is not None]
    lm = [len(a) for a in model_answers]
    lb = [len(a) for a in baseline_answers]
    est = lc = None
    lc_method = alpaca.SIMPLIFIED_LC
    if valid:
        ys = [outcomes[i] for i in valid]
        est = stats.win_rate(ys, n_boot=n_boot, seed=seed)
        lc, lc_method = alpaca.length_controlled(
            ys, [questions[i] for i in valid], [model_answers[i] for i in valid],
            [baseline_answers[i] for i in valid], alpaca_reference, n_boot=min(n_boot, 1000), seed=seed)
    labels = [(arena_label(verdicts[2 * i]), arena_label(verdicts[2 * i + 1])) for i in range(len(questions))]
    return WinRate(est, lc, outcomes, wins, ties, losses, failures,
                   first / judged if judged else None, lm, lb, lc_method,
                   arena_hard=arena_hard_score(labels), labels=labels)
