"""Regenerate tests/eval/data/arena_hard_reference.json: Arena-Hard-Auto's own numbers on
evalign's exports of a small judged fixture.

The fixture (12 questions, three models against one baseline, strong verdicts, ties,
probability-only verdicts and one unparsed game) is written with
:func:`evalign.eval.arena_hard.write_arena_hard`, then Arena-Hard's ``show_result.py`` runs
on it unchanged, once per model (one judgment file per data folder, so that its bootstrap
draws are those of that model alone), and its printed score and interval are recorded.

    python tools/arena_hard_reference.py --v01 CHECKOUT_V01 --v2 CHECKOUT_V2 \\
        --python /path/to/python-with-pandas-sklearn-torch

CHECKOUT_V01 is a checkout of lmarena/arena-hard-auto holding v0.1's ``show_result.py``,
``utils.py`` and ``utils_math.py``; CHECKOUT_V2 one holding the current ``show_result.py``
and ``utils/judge_utils.py``, ``utils/math_utils.py`` (see COMMITS for the versions the
shipped numbers come from). ``--python`` runs their scripts (they need pandas, numpy<2 for
v0.1's ``np.NAN``, scikit-learn, tqdm, pyyaml, requests, and torch for v2.0); this script
itself runs with evalign installed. v2.0's script sets no seed: it runs after
``numpy.random.seed(42)``, the seed evalign uses.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from evalign.eval.arena_hard import SEED, pair_labels, write_arena_hard
from evalign.eval.judgments import JudgedPair
from evalign.eval.sets import EvalPrompt
from evalign.judge.verdicts import Verdict

OUT = Path(__file__).resolve().parent.parent / "tests" / "eval" / "data" / "arena_hard_reference.json"
COMMITS = {
    "v0.1": {"repo": "lmarena/arena-hard-auto",
             "show_result.py": "0489bf384abd010906014dec7b903f7c438eabba",
             "utils_math.py": "561534a6a768e825a92af7e08384d0fe2111cb79",
             "utils.py": "01109e9930889fde8baada6e86bb74a7e029608b"},
    "v2.0": {"repo": "lmarena/arena-hard-auto",
             "show_result.py": "005ac120c11d3a1bbc35b0408a926dbc614de9c7",
             "utils/math_utils.py": "a9e743cc0b2c769219d2c4dd573af3d6da17698b",
             "utils/judge_utils.py": "bed160442a7ee41ebc7581774ed5a8fcec2b894a (as src/arenahard/utils/judge_utils.py)"},
}
BENCH = {"v0.1": "arena-hard-v0.1", "v2.0": "arena-hard-v2.0"}
JUDGE = "evalign-judge"
BASELINE = "gpt-4-0314"  # v0.1 anchors its bootstrap fits only to a baseline of this name
OTHER_BASELINE = "evalign-base"

# Per model, per question: (model-first game, baseline-first game). A game is a label, a
# probability-only verdict "p=<p_a>" (a log-prob judge), or None (unparsed).
GAMES = {
    "model-strong": [("A>>B", "B>>A"), ("A>B", "B>A"), ("A>>B", "B>A"), ("A=B", "B>>A"), ("A>B", "A=B"),
                     ("A>>B", "B>>A"), ("B>A", "B>A"), ("A>B", "A>B"), ("A>>B", "B>A"), ("A=B", "A=B"),
                     ("A>B", "B>>A"), ("B>>A", "A>B")],
    "model-even": [("A=B", "A=B"), ("A>B", "A>B"), ("B>A", "B>A"), ("p=0.71", "p=0.35"), ("A>>B", "A>>B"),
                   ("A=B", "B>A"), ("p=0.5", "p=0.62"), ("B>A", "A=B"), ("A>B", "B>A"), ("B>>A", "B>>A"),
                   ("p=0.2", "p=0.9"), ("A=B", "A>B")],
    "model-weak": [("B>>A", "A>>B"), ("B>A", "A>B"), ("A>B", "A>>B"), (None, "A>B"), ("B>A", "A=B"),
                   ("B>>A", "A>B"), ("A=B", "A=B"), ("B>A", "B>A"), ("B>>A", "A>>B"), ("A>B", "A>B"),
                   ("B>A", "A>>B"), ("A=B", "B>A")],
}
TOPICS = ["sorting a list", "binary search", "photosynthesis", "the French revolution", "compound interest",
          "a haiku about rain", "TCP handshakes", "prime numbers", "a cover letter", "unit testing",
          "black holes", "regular expressions"]


def prompts() -> list[EvalPrompt]:
    return [EvalPrompt(f"q{i:02d}", ["coding", "stem", "writing"][i % 3], f"Explain {t} to a new colleague.")
            for i, t in enumerate(TOPICS)]


def answers() -> dict[str, list[str]]:
    """Answers with some markdown (headers, lists, bold, code) for the style metadata."""
    styles = {
        BASELINE: lambda t, i: f"{t.capitalize()} is a topic worth knowing. In short, it works step by step.",
        "model-strong": lambda t, i: (f"## {t.capitalize()}\n\n**Key idea:** {t} in {i + 2} steps.\n\n"
                                      + "".join(f"{k}. Step {k} of {t}\n" for k in range(1, i % 4 + 2))
                                      + ("\n```python\n# a comment, not a header\nx = sorted(y)\n```\n" if i % 3 == 0 else "")),
        "model-even": lambda t, i: f"{t.capitalize()}:\n- what it is\n- why it matters\n- __one__ example ({i}).",
        "model-weak": lambda t, i: f"I think {t} is complicated.",
    }
    return {m: [f(t, i) for i, t in enumerate(TOPICS)] for m, f in styles.items()}


def verdict(game: str | None) -> Verdict:
    if game is None:
        return Verdict(parse_failed=True, raw="I cannot decide between them.")
    if game.startswith("p="):
        p_a = float(game[2:])
        return Verdict(p_a=p_a, label="A" if p_a >= 0.5 else "B", raw=f"P(A)={p_a}")
    return Verdict(p_a={"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}[game], label=game,
                   raw=f"Both answers were read. My final verdict: [[{game}]]")


def judged(model: str, baseline: str = BASELINE) -> list[JudgedPair]:
    ans = answers()
    out = []
    for p, (first, second), m, b in zip(prompts(), GAMES[model], ans[model], ans[BASELINE]):
        out.append(JudgedPair(p.id, p.prompt, model, baseline, m, b, verdict(first), verdict(second),
                              f"<|User Prompt|>\n{p.prompt}\n\n<|A|>\n{m}\n\n<|B|>\n{b}",
                              f"<|User Prompt|>\n{p.prompt}\n\n<|A|>\n{b}\n\n<|B|>\n{m}"))
    return out


def export(root: Path, version: str, models: list[str], baseline: str = BASELINE) -> None:
    ans = answers()
    texts = {m: ans[m] for m in models} | {baseline: ans[BASELINE]}
    write_arena_hard(root, BENCH[version], prompts(), texts, {m: judged(m, baseline) for m in models},
                     JUDGE, baseline, version)


WRAPPER = """import os, runpy, sys, numpy
script, seed = sys.argv[1], int(sys.argv[2])
numpy.random.seed(seed)
sys.path.insert(0, os.path.dirname(script))
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""
V01_LINE = re.compile(r"^(\S+)\s*\| score: \s*(-?[\d.]+)\s*\| 95% CI: \s*\((-?[\d.]+), (-?[\d.]+)\)\s*"
                      r"\| average #tokens: (\d+)")
V2_LINE = re.compile(r"^\s*\d+\s+(\S+)\s+(-?[\d.]+)\s+\(-(-?[\d.]+) / \+(-?[\d.]+)\)\s*$")


def run(python: str, checkout: Path, version: str, root: Path, baseline: str = BASELINE) -> dict:
    """Their show_result.py on ``root``; per model its printed line, parsed."""
    if version == "v0.1":
        (root / "leaderboard").mkdir(exist_ok=True)
        args = ["--bench-name", BENCH[version], "--judge-name", JUDGE, "--baseline", baseline, "--output"]
    else:
        args = ["-b", BENCH[version], "-j", JUDGE]
    proc = subprocess.run([python, "-c", WRAPPER, str(checkout / "show_result.py"), str(SEED), *args],
                          cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"show_result.py ({version}) failed:\n{proc.stdout}\n{proc.stderr}")
    out: dict[str, dict] = {}
    for line in proc.stdout.splitlines():
        if version == "v0.1" and (m := V01_LINE.match(line)):
            out[m[1]] = {"printed": line.rstrip(), "score": float(m[2]), "ci_minus": float(m[3]),
                         "ci_plus": float(m[4]), "avg_tokens": int(m[5])}
        elif version == "v2.0" and (m := V2_LINE.match(line)):
            out[m[1]] = {"printed": line.rstrip(), "score": round(100 * float(m[2]), 4),
                         "ci_minus": -float(m[3]), "ci_plus": float(m[4])}
    if version == "v0.1":  # --output: the same numbers to two decimals
        (table,) = (root / "leaderboard").glob("*.csv")
        for row in csv.DictReader(table.open()):
            out[row["model"]] |= {"score_2dp": float(row["score"]), "lower_2dp": float(row["rating_q025"]),
                                  "upper_2dp": float(row["rating_q975"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--v01", type=Path, required=True, help="checkout with v0.1's show_result.py")
    ap.add_argument("--v2", type=Path, required=True, help="checkout with the current show_result.py")
    ap.add_argument("--python", default=sys.executable, help="python that runs their scripts")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    checkouts = {"v0.1": args.v01, "v2.0": args.v2}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for version, checkout in checkouts.items():
            per_model = {}
            for model in GAMES:
                root = Path(tmp) / version / model
                export(root, version, [model])
                per_model[model] = run(args.python, checkout, version, root)[model]
            results[version] = per_model
        root = Path(tmp) / "joint"
        export(root, "v0.1", list(GAMES))
        results["v0.1 joint"] = run(args.python, args.v01, "v0.1", root)
        quirk = {}
        for model in GAMES:
            root = Path(tmp) / "quirk" / model
            export(root, "v0.1", [model], OTHER_BASELINE)
            quirk[model] = run(args.python, args.v01, "v0.1", root, OTHER_BASELINE)[model]
        results[f"v0.1 baseline {OTHER_BASELINE}"] = quirk
    versions = subprocess.run(
        [args.python, "-c", "import sys, numpy, pandas, sklearn, torch; print(sys.version.split()[0], numpy.__version__, "
         "pandas.__version__, sklearn.__version__, torch.__version__)"], capture_output=True, text=True, check=True)
    environment = dict(zip(["python", "numpy", "pandas", "scikit-learn", "torch"], versions.stdout.split()))
    fixture = {
        "comment": (
            "Arena-Hard-Auto's show_result.py, unchanged, on evalign's write_arena_hard exports of GAMES "
            "(one data folder per model; 'v0.1 joint': all three in one; 'v0.1 baseline evalign-base': the "
            "baseline under another name, where v0.1's bootstrap is unanchored and its printed interval "
            "collapses). Scores and CI bounds in percent; ci_minus/ci_plus as printed. v2.0 ran after "
            f"numpy.random.seed({SEED}). Files and commits in 'commits'. Regenerate: python "
            "tools/arena_hard_reference.py --v01 CHECKOUT --v2 CHECKOUT --python PYTHON"),
        "commits": COMMITS,
        "environment": environment,
        "judge": JUDGE, "baseline": BASELINE, "seed": SEED,
        "games": GAMES,
        "labels": {m: [list(pair_labels(p)) for p in judged(m)] for m in GAMES},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m[1]) + "]", text)  # pairs on one line
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
