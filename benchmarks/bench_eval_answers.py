"""eval_answers: one policy's evaluation answers, mixed sampling params in one batch.

An evaluation answers its win-rate prompts and its MT questions' turns. FastChat samples MT
answers at a temperature set per category (0.7 writing/roleplay, 0.0 math/coding/reasoning/
extraction, 0.1 stem/humanities), so the prompts of one turn carry up to four sets of params.

evalign: ``answer_all`` hands each turn's conversations to ``TransformersLLM.generate_each``,
which samples rows with different params in one decode loop (one batch per turn).
baseline: the same rows, one ``generate`` batch per distinct params (``LLM.generate_each``'s
default, what every turn cost before).

Sizes: the quickstart preset's evaluation (8 win-rate prompts, 4 MT questions of two turns,
answers up to 96 tokens, the built-in policy in bf16); with --quick too (it takes a minute).
The two ways are alternated ``ROUNDS`` times and the best time of each is kept.
"""

from __future__ import annotations

import time
from pathlib import Path

import common

POLICY = "smollm2-135m-instruct"
WINRATE_LIMIT, MT_LIMIT = 8, 4
MAX_NEW, TEMPERATURE, TOP_P = 96, 0.7, 0.9
ROUNDS = 3


def run(args) -> dict:
    from evalign.backends.base import LLM, GenParams
    from evalign.backends.transformers_backend import TransformersLLM
    from evalign.eval.answers import answer_all
    from evalign.eval.mt_bench import answer_temperature
    from evalign.eval.sets import load_mt_questions, load_winrate_prompts
    from evalign.weights import materialize

    prompts = load_winrate_prompts("builtin:eval", WINRATE_LIMIT)
    questions = load_mt_questions("builtin:mt", limit=MT_LIMIT)
    params = GenParams(MAX_NEW, TEMPERATURE, TOP_P)
    llm = TransformersLLM(str(materialize(POLICY)), model_id=POLICY, batch_size=32)

    class Grouped(LLM):
        """The same model, with the default one-batch-per-params ``generate_each``."""

        model_id = POLICY

        def generate(self, conversations, p, seeds):
            return llm.generate(conversations, p, seeds)

        def choice_logprobs(self, conversations, choices, assistant_prefix=""):
            raise NotImplementedError

    grouped = Grouped()
    llm.generate([[{"role": "user", "content": "warm up"}]], GenParams(8, TEMPERATURE, TOP_P), [0])
    best = {"mixed": float("inf"), "grouped": float("inf")}
    out = {}
    for _ in range(ROUNDS):
        for name, model in (("grouped", grouped), ("mixed", llm)):
            t0 = time.perf_counter()
            out[name] = answer_all(model, prompts, questions, params, 0, None)
            best[name] = min(best[name], time.perf_counter() - t0)
    common.log(f"one policy's answers, best of {ROUNDS}: grouped {best['grouped']:.1f}s, mixed {best['mixed']:.1f}s")

    winrate = {name: texts for name, (texts, _) in out.items()}
    mt = {name: [t for turns in m for t in turns] for name, (_, m) in out.items()}
    texts_m = winrate["mixed"] + mt["mixed"]
    texts_g = winrate["grouped"] + mt["grouped"]
    same = sum(a == b for a, b in zip(texts_m, texts_g))
    temps = sorted({answer_temperature(q.category, "fastchat", TEMPERATURE) for q in questions})
    n_answers = len(texts_m)
    rows = [
        common.row("one policy's evaluation answers: mixed params in one batch per turn vs one batch per params",
                   "answers/s", n_answers / best["mixed"], n_answers / best["grouped"],
                   baseline_label="one batch per params", key="mixed_vs_grouped"),
        common.row("sanity: answers identical to one batch per params (bf16, padding differs)", "answers",
                   same, n_answers, key="identical"),
    ]
    notes = [
        f"{len(prompts)} win-rate prompts (temperature {TEMPERATURE}) and {len(questions)} MT questions of two turns "
        f"(FastChat temperatures {temps}), answers up to {MAX_NEW} tokens, {POLICY} in {str(llm.dtype).replace('torch.', '')}: "
        f"{n_answers} answers. Best of {ROUNDS} alternated runs: {best['grouped']:.1f}s one batch per params, "
        f"{best['mixed']:.1f}s mixed.",
        f"{same} of {n_answers} answers are the same text both ways. A row's sample depends only on its prompt, "
        f"params and seed (its own generator); what may differ is bf16 rounding of padded batches of another "
        f"composition, which can flip a near-tie token.",
    ]
    bounds = [
        "Decode steps of a 135M model at batch sizes of 1-12 cost about the same (per-step overhead, not FLOPs), "
        "so the time follows the number of decode loops: one per temperature group present in a turn before, "
        "one per turn now."
    ]
    return {"rows": rows, "notes": notes, "bounds": bounds,
            "details": {"seconds": best, "answers": n_answers, "identical": same, "temperatures": temps}}


if __name__ == "__main__":
    import argparse
    import json

    print(json.dumps(run(argparse.Namespace(quick=True, workdir=Path("/tmp/bench_eval_answers"))), indent=1,
                     default=str))
