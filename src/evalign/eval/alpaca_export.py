"""An evaluation as AlpacaEval's files, so ``alpaca_eval`` recomputes evalign's numbers.

Layout written by :func:`write_alpaca_eval` (alpaca_eval's own ``results/`` layout, where
``evaluate`` looks for annotations next to the model outputs, in a folder named after the
annotator config)::

    root/<model>/model_outputs.json                 the model's answers (generator = model)
    root/<model>/reference_outputs.json             the baseline's answers (generator = baseline)
    root/<model>/<annotator>/annotations.json       one judged pair per prompt

Folder names are the names with characters other than letters, digits, '.', '_' and '-'
replaced by '_'; the files keep the real names. To recompute the metrics with alpaca_eval::

    alpaca_eval --model_outputs root/<model>/model_outputs.json \\
      --reference_outputs root/<model>/reference_outputs.json --annotators_config <annotator> \\
      --is_recompute_metrics_only True --precomputed_leaderboard <csv with a row for <model>>

alpaca_eval reads a row's position in annotations.json as its AlpacaEval ``index``; with an
:class:`~evalign.eval.alpaca.AlpacaReference` the rows follow AlpacaEval's order, so for the
full 805-instruction set its LC on the file is the official one. Checked against
alpaca-eval 0.6.6.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from evalign import fsutil
from evalign.eval import formats
from evalign.eval.alpaca import AlpacaReference, dataset_of
from evalign.eval.judgments import JudgedPair
from evalign.eval.sets import EvalPrompt
from evalign.judge.verdicts import combine_orders

Combine = Callable[[float | None, float | None], float | None]


def _mean_orders(p_model_first: float | None, p_baseline_first: float | None) -> float | None:
    return combine_orders(p_model_first, p_baseline_first, "mean")


def annotation_rows(pairs: Sequence[JudgedPair], annotator: str, *, combine: Combine | None = None,
                    datasets: Mapping[str, str] | None = None) -> list[dict]:
    """alpaca_eval's annotation records: the baseline is output_1, the model output_2, and
    preference = 1 + P(model better), combined over both orders as the win rate combines
    them (``combine``, default the mean of p_model_first and 1 − p_baseline_first; pass
    ``judge.combine`` for a judge whose variant combines otherwise). Prompts whose verdicts
    could not be parsed in either order are left out, as the win rate leaves them out."""
    combine = combine or _mean_orders
    datasets = datasets or {}
    rows = []
    for p in pairs:
        outcome = combine(p.model_first.p_a, p.baseline_first.p_a)
        if outcome is None:
            continue
        rows.append({
            "instruction": p.instruction, "output_1": p.baseline_answer, "generator_1": p.baseline,
            "dataset": datasets.get(p.instruction) or formats.ALPACA_DEFAULT_DATASET,
            "output_2": p.model_answer, "generator_2": p.model, "annotator": annotator,
            "preference": 1.0 + outcome,
            "raw_completion": {"model_first": p.model_first.raw, "baseline_first": p.baseline_first.raw},
            "judge_prompts": {"model_first": p.prompt_model_first, "baseline_first": p.prompt_baseline_first},
        })
    return rows


def export_alpaca_annotations(pairs: Sequence[JudgedPair], annotator: str, path: formats.PathLike, *,
                              combine: Combine | None = None, datasets: Mapping[str, str] | None = None) -> None:
    """Write :func:`annotation_rows` as AlpacaEval's ``annotations.json``."""
    rows = annotation_rows(pairs, annotator, combine=combine, datasets=datasets)
    fsutil.atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")


def folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def write_alpaca_eval(root: Path, model: str, baseline: str, prompts: Sequence[EvalPrompt],
                      model_answers: Sequence[str], baseline_answers: Sequence[str], pairs: Sequence[JudgedPair],
                      annotator: str, *, combine: Combine | None = None,
                      reference: AlpacaReference | None = None) -> dict[str, Path]:
    """Write one evaluation in alpaca_eval's layout (module docstring); returns the paths.
    ``pairs`` are :func:`evalign.eval.judgments.judged_pairs` of the same prompts, in order."""
    if not len(prompts) == len(model_answers) == len(baseline_answers) == len(pairs):
        raise ValueError(f"prompts, answers and pairs differ in number: {len(prompts)}, {len(model_answers)}, "
                         f"{len(baseline_answers)}, {len(pairs)}")
    if any(p.prompt != j.instruction for p, j in zip(prompts, pairs)):
        raise ValueError("pairs must judge the prompts in the prompts' order")
    order = list(range(len(prompts)))
    positions = reference.positions([p.prompt for p in prompts]) if reference else None
    if positions is not None:
        order.sort(key=lambda i: positions[i])
    datasets = {p.prompt: dataset_of(p) for p in prompts}
    folder = Path(root) / folder_name(model)
    paths = {"model_outputs": folder / "model_outputs.json", "reference_outputs": folder / "reference_outputs.json",
             "annotations": folder / folder_name(annotator) / "annotations.json"}
    paths["annotations"].parent.mkdir(parents=True, exist_ok=True)
    formats.export_alpaca_outputs({prompts[i].prompt: model_answers[i] for i in order}, model,
                                  paths["model_outputs"], datasets)
    formats.export_alpaca_outputs({prompts[i].prompt: baseline_answers[i] for i in order}, baseline,
                                  paths["reference_outputs"], datasets)
    export_alpaca_annotations([pairs[i] for i in order], annotator, paths["annotations"],
                              combine=combine, datasets=datasets)
    return paths
