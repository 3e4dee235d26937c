"""A small stand-in for AlpacaEval's hub data (df_gamed.csv, alpaca_eval.json), written for
these tests: instructions, difficulties and the gamed baselines' preferences are made up.
The real files live only on the hub (dataset tatsu-lab/alpaca_eval); alpaca-eval 0.6.6's
wheel ships neither, so the official LC's arithmetic is checked here on this stand-in."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from evalign.eval.sets import EvalPrompt

SOURCES = ["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"]


def instructions(n: int) -> list[str]:
    return [f"Describe, in a few sentences, how item {i} of the stand-in set would be explained." for i in range(n)]


def write_alpaca_data(directory: Path, n: int, seed: int = 0) -> list[str]:
    """Write df_gamed.csv (two gamed baselines x n instructions) and alpaca_eval.json."""
    rng = np.random.default_rng(seed)
    texts = instructions(n)
    difficulty = rng.normal(0.0, 1.0, n)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "df_gamed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline"])
        for model, sign in (("gamed_concise", -1.0), ("gamed_verbose", 1.0)):
            for i in range(n):
                delta = sign * abs(rng.normal(1.0, 0.5))
                pref = float(np.clip(1 / (1 + np.exp(-(delta + difficulty[i]))) + rng.normal(0, 0.1), 0, 1))
                w.writerow([model, i, pref, delta, difficulty[i], False])
    rows = [{"dataset": SOURCES[i % len(SOURCES)], "instruction": t, "output": "ref", "generator": "ref"}
            for i, t in enumerate(texts)]
    (directory / "alpaca_eval.json").write_text(json.dumps(rows))
    return texts


def alpaca_prompts(texts: list[str]) -> list[EvalPrompt]:
    """The prompts as sets.py loads an AlpacaEval JSON file (ids alpaca-N, dataset as category)."""
    return [EvalPrompt(f"alpaca-{i + 1}", SOURCES[i % len(SOURCES)], t) for i, t in enumerate(texts)]
