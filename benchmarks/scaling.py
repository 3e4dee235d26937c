"""Scaling: what one eva iteration's stages cost as the pool (N) and samples per prompt (k) grow.

    flock /tmp/evalign-cpu.lock python benchmarks/scaling.py [--n 32 64 128] [--k 2 4]

Each (N, k) runs one iteration of the ``eva`` arm in its own process and its own run
directory (nothing shared between configurations), with the built-in models and the
quickstart preset's budgets — creator on, evol_instruct with num_evolutions 2, sample
fraction 0.25, small evaluation disabled — and ``prompts.limit = N``,
``solver.num_samples = k``. Per-stage seconds come from the stages the loop recorded:

* generate = generate_pool + generate_evolved   (policy samples: N·k + kept·k)
* reward   = reward_pool + reward_evolved       (judge calls, one per sample)
* evolve   = the creator's rewrites             (0.25·N parents x 2 rounds)
* train    = DPO on the mixed pairs

The fit regresses each stage on its natural size (samples, creator calls, pairs x epochs)
and on N·k, and reports the slope (seconds per unit), intercept, R² and the log-log exponent
(1.0 = linear). Results: benchmarks/results/scaling.{json,md}; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STAGES = {"generate": ("generate_pool", "generate_evolved"), "reward": ("reward_pool", "reward_evolved"),
          "evolve": ("evolve",), "train": ("train",)}


def one_iteration(n: int, k: int, run_dir: Path) -> dict:
    from evalign.config import load_config
    from evalign.run.loop import Runner
    from evalign.progress import set_quiet
    from evalign.run.session import open_run

    set_quiet(True)
    cfg = load_config(preset="quickstart", overrides={
        "run.output_dir": str(run_dir), "prompts.limit": n, "solver.num_samples": k, "creator.enabled": True,
        "creator.num_evolutions": 2, "eval.enabled": False})
    t0 = time.perf_counter()
    with open_run(cfg, with_eval=False) as s:
        runner = Runner(cfg, s.store, s.pool)
        state = runner.run_arm("eva", cfg)
        uses = [u.__dict__ for u in runner.uses]
        train = next((json.loads(r["outputs"]) for r in s.store.stages() if r["name"] == "train"), {})
    wall = time.perf_counter() - t0
    summary = state.summary.get("iteration_1", {})
    per = {name: sum(u["seconds"] for u in uses if u["name"] in parts) for name, parts in STAGES.items()}
    calls = {u["name"]: u["calls"] for u in uses}
    return {"N": n, "k": k, "wall": wall, "stages": per, "uses": uses, "summary": summary,
            "samples": n * k + summary.get("kept", 0) * k, "reward_calls": calls.get("reward_pool", 0)
            + calls.get("reward_evolved", 0), "creator_calls": calls.get("evolve", 0),
            "pairs": summary.get("train_pairs", 0), "train_steps": train.get("steps", 0),
            "epochs": cfg.solver.train.epochs}


def linfit(xs: list[float], ys: list[float]) -> dict:
    """Least squares y = a + b x, R², and the log-log slope (growth exponent)."""
    n = len(xs)
    if n < 2:
        return {"a": None, "b": None, "r2": None, "exponent": None}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return {"a": my, "b": 0.0, "r2": None, "exponent": None}
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys))
    r2 = 1 - ss_res / ss_tot if ss_tot else None
    pos = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    exponent = None
    if len(pos) >= 2:
        lx, ly = zip(*pos)
        mlx, mly = sum(lx) / len(lx), sum(ly) / len(ly)
        slx = sum((x - mlx) ** 2 for x in lx)
        exponent = sum((x - mlx) * (y - mly) for x, y in zip(lx, ly)) / slx if slx else None
    return {"a": a, "b": b, "r2": r2, "exponent": exponent}


def natural_size(r: dict, stage: str) -> float:
    return {"generate": r["samples"], "reward": r["reward_calls"] or r["samples"], "evolve": r["creator_calls"],
            "train": r["pairs"] * r["epochs"]}[stage]


def analyse(results: list[dict]) -> dict:
    fits = {}
    for stage in STAGES:
        ys = [r["stages"][stage] for r in results]
        fits[stage] = {"vs_Nk": linfit([r["N"] * r["k"] for r in results], ys),
                       "vs_size": linfit([natural_size(r, stage) for r in results], ys)}
    fits["total"] = {"vs_Nk": linfit([r["N"] * r["k"] for r in results], [r["wall"] for r in results])}
    return fits


def render(results: list[dict], fits: dict) -> str:
    rows = []
    for r in sorted(results, key=lambda r: (r["N"], r["k"])):
        st = r["stages"]
        top = max(st, key=st.get)
        rows.append([r["N"], r["k"], r["N"] * r["k"], r["samples"], r["creator_calls"], r["pairs"], st["generate"],
                     st["reward"], st["evolve"], st["train"], r["wall"], f"{top} ({st[top] / r['wall']:.0%})"])
    table = common.markdown_table(["N", "k", "N·k", "samples (pool+evolved)", "creator calls", "train pairs",
                                   "generate s", "reward s", "evolve s", "train s", "iteration wall s", "largest"],
                                  rows)
    units = {"generate": "sample", "reward": "judge call", "evolve": "creator call", "train": "pair-epoch"}
    frows = []
    for stage in STAGES:
        f, g = fits[stage]["vs_size"], fits[stage]["vs_Nk"]
        frows.append([stage, f"{common.fmt(f['b'])} s per {units[stage]}", common.fmt(f["a"]), common.fmt(f["r2"]),
                      common.fmt(f["exponent"]), f"{common.fmt(g['b'])} s per N·k", common.fmt(g["r2"]),
                      common.fmt(g["exponent"])])
    t = fits["total"]["vs_Nk"]
    frows.append(["iteration", "", common.fmt(t["a"]), "", "", f"{common.fmt(t['b'])} s per N·k", common.fmt(t["r2"]),
                  common.fmt(t["exponent"])])
    fit_table = common.markdown_table(["stage", "slope (own size)", "intercept s", "R²", "exponent",
                                       "slope vs N·k", "R² vs N·k", "exponent vs N·k"], frows)
    return table + "\n" + fit_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--k", type=int, nargs="+", default=[2, 4])
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=common.RESULTS / "scaling")
    p.add_argument("--child", type=int, nargs=2, metavar=("N", "K"), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        res = one_iteration(args.child[0], args.child[1], args.workdir)
        common.write_json(args.result, res)
        return 0

    import run as harness

    lock = harness.hold_cpu_lock()  # noqa: F841
    work = args.workdir or Path(tempfile.mkdtemp(prefix="evalign-scaling-"))
    results = []
    prev = {}
    if Path(str(args.out) + ".json").is_file():  # resume: keep configurations already measured
        prev = {(r["N"], r["k"]): r for r in json.loads(Path(str(args.out) + ".json").read_text())["results"]}
    for n in args.n:
        for k in args.k:
            if (n, k) in prev:
                results.append(prev[(n, k)])
                print(f"N={n} k={k}: kept from {args.out}.json", flush=True)
                continue
            res_path = work / f"N{n}_k{k}.json"
            log_path = common.RESULTS / "logs" / f"scaling_N{n}_k{k}.log"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), str(k), "--result",
                   str(res_path), "--workdir", str(work / f"N{n}_k{k}")]
            print(f"N={n} k={k} ...", flush=True)
            rc, seconds, rss = common.run_child(cmd, log_path, timeout=4 * 3600)
            if rc != 0:
                print(f"  failed (rc {rc}):\n{common.tail(log_path, 2000)}", flush=True)
                continue
            r = json.loads(res_path.read_text())
            r["peak_rss_mb"] = rss
            results.append(r)
            print(f"  {r['wall']:.0f}s: " + ", ".join(f"{s} {v:.0f}s" for s, v in r["stages"].items()), flush=True)
            common.write_json(Path(str(args.out) + ".json"), {"results": results, "fits": analyse(results),
                                                              "machine": common.machine_info()})
    fits = analyse(results)
    common.write_json(Path(str(args.out) + ".json"), {"results": results, "fits": fits,
                                                      "machine": common.machine_info()})
    md = render(results, fits)
    Path(str(args.out) + ".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
