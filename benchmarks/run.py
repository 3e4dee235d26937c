"""evalign's performance harness: each item measured against its baseline in the same run.

    flock /tmp/evalign-cpu.lock python benchmarks/run.py [--quick] [--only ITEM ...]
                                                         [--quickstart-run DIR] [--cpu-run DIR]

Items (see benchmarks/README.md for what each row means):

  policy_sampling   TransformersLLM.generate vs transformers model.generate, one prompt at a time
  eval_answers      one policy's evaluation answers, mixed sampling params in one batch vs one
                    batch per params
  judge_scoring     Judge.grade vs a naive per-call judge and vs raw llama-cpp-python replay
  creator_rewrites  creator.evolve vs one-at-a-time create_chat_completion calls
  dpo               train_preference vs TRL DPOTrainer with its defaults (+ a LoRA row)
  cache             a repeated evaluation and a resumed finished run, as fractions of the first
  end_to_end        `evalign ablate --preset quickstart` and one `evalign run` iteration
  cpu_study         `evalign ablate --preset cpu` (up to two hours; only when named, or
                    read from a finished run with --cpu-run DIR)

Every item runs in its own process (its peak RSS is that process's), prints its rows as soon
as it finishes, and the whole table goes to benchmarks/results/latest.{json,md}
(latest-quick.* with --quick; --only replaces those items in the existing file). Timings are
only meaningful when nothing else runs: run it under the shared CPU lock (if nobody holds
the lock, this script takes it itself).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ITEMS = {
    "policy_sampling": "bench_policy",
    "eval_answers": "bench_eval_answers",
    "judge_scoring": "bench_judge",
    "creator_rewrites": "bench_creator",
    "dpo": "bench_dpo",
    "cache": "bench_cache",
    "end_to_end": "bench_e2e",
    "cpu_study": "bench_cpu_study",
}
# Run by default (no --only): every item but the two-hour CPU study, which runs when named
# or is read from a finished run (--cpu-run).
DEFAULT_ITEMS = [n for n in ITEMS if n != "cpu_study"]
# Generous per-item limits (seconds); a stuck item must not hold the shared lock forever.
TIMEOUTS = {"policy_sampling": 3600, "eval_answers": 1200, "judge_scoring": 5400, "creator_rewrites": 2400, "dpo": 5400,
            "cache": 3600, "end_to_end": 7200, "cpu_study": 9000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (minutes instead of an hour)")
    p.add_argument("--only", nargs="+", choices=list(ITEMS), metavar="ITEM", help=f"items to run: {', '.join(ITEMS)}")
    p.add_argument("--quickstart-run", type=Path, metavar="DIR",
                   help="end_to_end: read this finished `evalign ablate --preset quickstart` run directory "
                        "instead of running the ablation (~25 min)")
    p.add_argument("--cpu-run", type=Path, metavar="DIR",
                   help="cpu_study: read this finished `evalign ablate --preset cpu` run directory (its wall "
                        "time and peak RSS from DIR.time, the output of /usr/bin/time -v) instead of running it")
    p.add_argument("--out", type=Path, default=None, help="results prefix (default results/latest[-quick])")
    p.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    p.add_argument("--child", choices=list(ITEMS), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the CPU lock


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def lock_holders(path: str) -> set[int]:
    """PIDs holding a lock on ``path`` (from /proc/locks)."""
    try:
        ino = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return set()
    out = set()
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6:
            continue  # a waiter, not a holder
        try:
            if int(parts[5].rsplit(":", 1)[1]) == ino:
                out.add(int(parts[4]))
        except (ValueError, IndexError):
            continue
    return out


def hold_cpu_lock(path: str = common.LOCK):
    """Make sure this run has the CPU to itself: already under `flock` (an ancestor holds the
    lock), or take the lock now (waiting for whoever holds it). Returns the open file (keep it)."""
    Path(path).touch(exist_ok=True)
    if lock_holders(path) & _ancestors():
        return None
    fh = open(path, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        print(f"waiting for {path} (held by PID {sorted(lock_holders(path))}) ...", flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


# ----------------------------------------------------------------------------- parent


def run_items(args: argparse.Namespace) -> int:
    lock = hold_cpu_lock()  # noqa: F841 - held until exit
    names = args.only or DEFAULT_ITEMS + (["cpu_study"] if args.cpu_run else [])
    mode = "quick" if args.quick else "full"
    prefix = args.out or (common.RESULTS / ("latest-quick" if args.quick else "latest"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="evalign-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "") + (
        f" --only {' '.join(names)}" if args.only else "") + (
        f" --quickstart-run {args.quickstart_run}" if args.quickstart_run else "") + (
        f" --cpu-run {args.cpu_run}" if args.cpu_run else "")
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"evalign benchmarks ({mode}): {', '.join(names)}; scratch {workdir}", flush=True)
    done = []
    for name in names:
        res_path = workdir / f"{name}.result.json"
        log_path = common.RESULTS / "logs" / f"{name}{'-quick' if args.quick else ''}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--result", str(res_path),
               "--workdir", str(workdir / name)]
        if args.quick:
            cmd.append("--quick")
        if args.quickstart_run:
            cmd += ["--quickstart-run", str(args.quickstart_run)]
        if args.cpu_run:
            cmd += ["--cpu-run", str(args.cpu_run)]
        print(f"== {name} (log: {log_path.relative_to(common.ROOT)})", flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        rc, seconds, rss = common.run_child(cmd, log_path, timeout=TIMEOUTS[name], env=env)
        if rc == 0 and res_path.is_file():
            item = json.loads(res_path.read_text())
        else:
            item = {"item": name, "rows": [], "error": f"exit code {rc}" + (" (timed out)" if rc == -9 else ""),
                    "log_tail": common.tail(log_path)}
            print(item["log_tail"][-2000:], flush=True)
        item.update({"item": name, "seconds": seconds, "peak_rss_mb": rss, "mode": mode, "finished": time.strftime("%Y-%m-%d %H:%M")})
        done.append(item)
        common.print_item(item)
    old = []
    json_path = Path(str(prefix) + ".json")
    if args.only and json_path.is_file():
        try:
            old = json.loads(json_path.read_text()).get("items", [])
        except (OSError, ValueError):
            old = []
    report = {"mode": mode, "command": command, "started": started, "machine": common.machine_info(),
              "items": common.merge_items(old, done, list(ITEMS))}
    common.write_json(json_path, report)
    md = common.render_markdown(report)
    Path(str(prefix) + ".md").write_text(md, encoding="utf-8")
    print("\n" + common.results_table(report["items"]))
    print(f"wrote {json_path} and {prefix}.md")
    return 0 if all(not it.get("error") for it in done) else 1


# ----------------------------------------------------------------------------- child


def run_child_item(args: argparse.Namespace) -> int:
    import importlib

    from evalign.progress import set_quiet

    set_quiet(True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    mod = importlib.import_module(ITEMS[args.child])
    common.log(f"{args.child}: start ({'quick' if args.quick else 'full'})")
    result = mod.run(args)
    result["item"] = args.child
    common.write_json(args.result, result)
    common.log(f"{args.child}: done")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child_item(args)
    return run_items(args)


if __name__ == "__main__":
    sys.exit(main())
