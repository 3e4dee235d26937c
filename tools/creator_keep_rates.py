"""Per-operator keep rates of the creator's parser + filters on the labelled creator outputs.

    PYTHONPATH=src python tools/creator_keep_rates.py [tests/creator/creator_outputs.jsonl]

Each labelled raw output is parsed as ``evolve`` parses it and filtered with the default
``FilterConfig`` against its parent (and the parent plus the case's ``pool`` as the pool), so
the table shows which evolutions the code under ``PYTHONPATH`` keeps, per operator and parent
length. Run it on two checkouts to compare them; it also runs on code that predates
``creator.parse_output``. Columns: kept / prompts, and agree / prompts (the parsed text and
the keep decision both equal the label).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from evalign.config import FilterConfig
from evalign.creator import filter_evolved, parse_numbered_list, parse_prompt

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "creator" / "creator_outputs.jsonl"
OPERATORS = ("evol_instruct", "evol_complexity", "evol_quality", "self_instruct")


def parsed(case: dict) -> list[str]:
    """The prompts the code yields for one raw output, as ``evolve`` records them."""
    try:
        from evalign.creator import parse_output
    except ImportError:  # older code: the same steps, inline in evolve
        if case["operator"] != "self_instruct":
            return [""] if case["cut_off"] else [parse_prompt(case["raw"])]
        texts = parse_numbered_list(case["raw"])
        return (texts[:-1] if case["cut_off"] else texts) or [""]
    return parse_output(case["operator"], case["raw"], case["parent"], case["cut_off"])


def decisions(case: dict) -> list[tuple[str, bool]]:
    texts = parsed(case)
    kept = filter_evolved(texts, [case["parent"]] * len(texts), [case["parent"], *case["pool"]], [], FilterConfig())
    return [(t, d.kept) for t, d in zip(texts, kept)]


def main(path: Path) -> None:
    cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    table: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # kept, agree, total, labelled keep
    for case in cases:
        got = decisions(case)
        labels = list(zip(case["expected"], case["keep"]))
        cell = table[case["operator"], case["length"]]
        cell[0] += sum(k for _, k in got)
        cell[1] += sum(g == lab for g, lab in zip(got, labels)) if len(got) == len(labels) else 0
        cell[2] += len(labels)
        cell[3] += sum(k for _, k in labels)
    print(f"{'operator':<16} {'parents':<7} {'kept':>7} {'agree':>7} {'label keep':>10}")
    for op in OPERATORS:
        for length in ("short", "long"):
            kept, agree, total, want = table[op, length]
            print(f"{op:<16} {length:<7} {kept:>3}/{total:<3} {agree:>3}/{total:<3} {want:>6}/{total:<3}")
    kept, agree, total, want = (sum(c[i] for c in table.values()) for i in range(4))
    print(f"{'all':<16} {'':<7} {kept:>3}/{total:<3} {agree:>3}/{total:<3} {want:>6}/{total:<3}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA)
