"""The benchmark harness's plumbing (benchmarks/): rows, ratios, targets, tables, peak-RSS
reading, the CPU lock, store breakdowns and fits. No timings: those live in benchmarks/."""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_cpu_study  # noqa: E402
import bench_e2e  # noqa: E402
import common  # noqa: E402
import scaling  # noqa: E402
from common import Target  # noqa: E402

# benchmarks/run.py by path: the name "run" is also the tests' package for src/evalign/run.
_spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


# ----------------------------------------------------------------------------- targets and rows


def test_check_operators():
    assert common.check(5.0, ">=", 5.0) is True
    assert common.check(4.99, ">=", 5.0) is False
    assert common.check(0.05, "<=", 0.05) is True
    assert common.check(0.051, "<=", 0.05) is False
    assert common.check(1.19, "within", 0.2) is True
    assert common.check(0.79, "within", 0.2) is False
    assert common.check(None, ">=", 1.0) is None
    assert common.check(float("nan"), ">=", 1.0) is None


def test_ratio_and_overhead():
    assert common.ratio(10.0, 2.0) == 5.0
    assert common.ratio(1.0, 0.0) is None
    assert common.ratio(None, 2.0) is None
    assert common.ratio(1.0, float("inf")) is None
    # evalign 0.9 calls/s against a 1.0 calls/s ceiling: 11.1% more time for the same work
    assert common.overhead(0.9, 1.0) == pytest.approx(1 / 0.9 - 1)
    assert common.overhead(1.0, 1.0) == 0.0


def test_target_validation_and_text():
    with pytest.raises(ValueError):
        Target("==", 1.0)
    with pytest.raises(ValueError):
        Target(">=", 1.0, on="baseline")
    assert Target(">=", 5.0, unit="x").text() == "≥ 5x"
    assert Target(">=", 1.5, unit="x").text() == "≥ 1.5x"
    assert Target("<=", 0.05, unit="%").text() == "≤ 5%"
    assert Target("<=", 0.1, on="overhead", unit="%").text() == "overhead ≤ 10%"
    assert Target("<=", 15.0, on="evalign", unit="min").text() == "≤ 15 min"
    assert Target("<=", 0.05, on="evalign").text() == "≤ 0.05"
    assert Target("within", 0.2).text() == "within ±20%"
    t = Target("<=", 0.1, on="overhead", unit="%")
    assert Target.from_dict(t.as_dict()) == t
    assert Target.from_dict(None) is None


def test_row_met_reads_the_right_number():
    r = common.row("speed", "tokens/s", 500.0, 80.0, target=Target(">=", 5.0, unit="x"))
    assert r["ratio"] == pytest.approx(6.25) and r["met"] is True
    r = common.row("speed", "tokens/s", 300.0, 80.0, target=Target(">=", 5.0, unit="x"))
    assert r["met"] is False
    # overhead of evalign against a ceiling (rates)
    r = common.row("judge", "calls/s", 0.95, 1.0, target=Target("<=", 0.10, on="overhead", unit="%"))
    assert r["overhead"] == pytest.approx(1 / 0.95 - 1) and r["met"] is True
    r = common.row("judge", "calls/s", 0.85, 1.0, target=Target("<=", 0.10, on="overhead", unit="%"))
    assert r["met"] is False
    # a target on the evalign figure itself, no baseline
    r = common.row("ablation", "min", 14.0, target=Target("<=", 15.0, on="evalign", unit="min"))
    assert r["ratio"] is None and r["met"] is True
    # fraction of a first run (lower is better)
    r = common.row("resume", "s", 2.0, 100.0, target=Target("<=", 0.05, unit="%"))
    assert r["ratio"] == 0.02 and r["met"] is True
    # no target: met is None, shown as n/a
    r = common.row("info", "x", 1.0, 1.0)
    assert r["met"] is None and common.met_text(r["met"], r["target"]) == "n/a"
    # a missing measurement never passes
    r = common.row("broken", "x", None, 1.0, target=Target(">=", 1.0))
    assert r["met"] is None and common.met_text(r["met"], r["target"]) == "?"


def test_json_roundtrip_of_rows():
    r = common.row("a | b", "s", 1.0, 2.0, target=Target("<=", 0.05, unit="%"))
    assert json.loads(json.dumps(r)) == r


# ----------------------------------------------------------------------------- formatting


@pytest.mark.parametrize("value,text", [
    (None, "–"), (True, "yes"), (0.0, "0"), (412.345, "412"), (5.4321, "5.43"), (0.012345, "0.0123"),
    (123456.0, "123 456"), (12, "12"), (123456, "123 456"), (1.5e-7, "1.50e-07"), (float("inf"), "inf"),
])
def test_fmt(value, text):
    assert common.fmt(value) == text


def test_markdown_table_shape_and_escaping():
    md = common.markdown_table(["a", "b"], [["x|y", 1.23456], ["two\nlines", None]])
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b |"
    assert lines[1] == "|---|---|"
    assert lines[2] == "| x\\|y | 1.23 |"
    assert lines[3] == "| two lines | – |"


def _item(**kw):
    base = {"item": "policy_sampling", "peak_rss_mb": 2048.0, "seconds": 10.0, "notes": ["n1"], "bounds": ["b1"],
            "rows": [common.row("evalign vs HF", "tokens/s", 500.0, 80.0, target=Target(">=", 5.0, unit="x"),
                                baseline_label="16 prompts"),
                     common.row("judge", "calls/s", 0.95, 1.0, target=Target("<=", 0.1, on="overhead", unit="%")),
                     common.row("info", "s", 1.0, 2.0)]}
    base.update(kw)
    return base


def test_results_table_rows_ratio_and_met():
    md = common.results_table([_item(), {"item": "dpo", "error": "exit code 1", "peak_rss_mb": None}])
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 3 + 1
    first = lines[2]
    assert "policy_sampling" in first and "6.25x" in first and "≥ 5x" in first and "**yes**" in first
    assert "2.0 GiB" in first and "80.0 (16 prompts)" in first
    assert "overhead 5.26%" in lines[3]
    assert "n/a" in lines[4]
    assert "FAILED: exit code 1" in lines[5]
    # only the first row of an item names it and its memory
    assert lines[3].startswith("|  |")


def test_render_markdown_has_table_notes_bounds_and_tables():
    report = {"mode": "quick", "command": "python benchmarks/run.py --quick", "started": "now",
              "machine": {"cpu": "test cpu", "cores": 2}, "items": [_item(tables={"loss per step": "| a |\n"})]}
    md = common.render_markdown(report)
    assert md.startswith("# evalign benchmark results (quick)")
    assert "test cpu" in md and "## policy_sampling" in md
    assert "- n1" in md and "- b1" in md and "**loss per step**" in md


def test_merge_items_replaces_and_orders():
    old = [{"item": "dpo", "v": 1}, {"item": "cache", "v": 1}]
    new = [{"item": "dpo", "v": 2}, {"item": "policy_sampling", "v": 2}]
    merged = common.merge_items(old, new, ["policy_sampling", "dpo", "cache"])
    assert [(m["item"], m["v"]) for m in merged] == [("policy_sampling", 2), ("dpo", 2), ("cache", 1)]


# ----------------------------------------------------------------------------- processes and memory


def test_maxrss_units():
    assert common.maxrss_mb(2048, "Linux") == 2.0
    assert common.maxrss_mb(2 * 1024 * 1024, "Darwin") == 2.0


def test_proc_status_parsing():
    text = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\n"
    assert common.proc_status_kib(text) == 123456
    assert common.proc_status_kib(text, "VmRSS") == 100000
    assert common.proc_status_kib(text, "Missing") is None


def test_run_child_reports_exit_code_log_and_peak_rss(tmp_path):
    code = "import sys; b = bytearray(80 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('hello'); sys.exit(3)"
    rc, seconds, rss = common.run_child([sys.executable, "-c", code], tmp_path / "child.log")
    assert rc == 3
    assert seconds > 0
    assert rss >= 80  # MiB: the child's own peak, touched pages included
    assert "hello" in (tmp_path / "child.log").read_text()


def test_run_child_peak_is_per_child(tmp_path):
    """From a small parent (as run.py is: it imports no torch), one child's 80 MiB peak does
    not leak into the next child's figure. (On Linux a child's peak also counts the parent's
    resident set at fork, so the check runs in its own small process, not in pytest's.)"""
    script = (
        "import sys; sys.path.insert(0, 'benchmarks'); import common; from pathlib import Path\n"
        "big = \"b = bytearray(80 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])\"\n"
        f"common.run_child([sys.executable, '-c', big], Path({str(tmp_path / 'big.log')!r}))\n"
        f"print(common.run_child([sys.executable, '-c', 'print(1)'], Path({str(tmp_path / 'small.log')!r}))[2])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=BENCH.parent, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 80


def test_run_child_timeout(tmp_path):
    rc, seconds, _ = common.run_child([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "t.log",
                                      timeout=0.5)
    assert rc == -9 and seconds < 10


# ----------------------------------------------------------------------------- the CPU lock


def test_lock_taken_when_free_and_visible_in_proc_locks(tmp_path):
    lock = tmp_path / "cpu.lock"
    fh = harness.hold_cpu_lock(str(lock))
    try:
        assert fh is not None
        assert os.getpid() in harness.lock_holders(str(lock))
        # a second open file description cannot take it now
        other = open(lock, "a")
        with pytest.raises(OSError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.close()
    finally:
        fh.close()
    assert os.getpid() not in harness.lock_holders(str(lock))


def test_lock_held_by_an_ancestor_is_ours(tmp_path, monkeypatch):
    lock = tmp_path / "cpu.lock"
    lock.touch()
    monkeypatch.setattr(harness, "lock_holders", lambda path: {os.getppid()})
    assert harness.hold_cpu_lock(str(lock)) is None  # already under `flock`: do not wait on ourselves


def test_parse_args_items():
    a = harness.parse_args(["--quick", "--only", "dpo", "cache", "--quickstart-run", "/tmp/qs"])
    assert a.quick and a.only == ["dpo", "cache"] and a.quickstart_run == Path("/tmp/qs")
    with pytest.raises(SystemExit):
        harness.parse_args(["--only", "nonsense"])


# ----------------------------------------------------------------------------- end_to_end breakdown


@pytest.mark.parametrize("text,seconds", [
    ("\nreal\t27m14.383s\nuser\t48m13.208s\n", 27 * 60 + 14.383),
    ("real 0m5.5s", 5.5),
    ("0:27:14 elapsed", 27 * 60 + 14),
    ("nothing here", None),
])
def test_parse_time_file(text, seconds):
    got = bench_e2e.parse_time_file(text)
    assert (got is None and seconds is None) or got == pytest.approx(seconds)


def _fake_run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    con = sqlite3.connect(d / "run.db")
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE stages (key TEXT, name TEXT, arm TEXT, iteration INTEGER, status TEXT, started_at REAL,
                             finished_at REAL, seconds REAL, outputs TEXT);
        CREATE TABLE generations (key TEXT, created_at REAL);
        CREATE TABLE judgments (key TEXT, created_at REAL);
    """)
    uses = [{"name": "generate_pool", "seconds": 30.0, "reused": False, "calls": 48},
            {"name": "generate_pool", "seconds": 0.0, "reused": True, "calls": 0},
            {"name": "train", "seconds": 60.0, "reused": False, "calls": 0},
            {"name": "eval_winrate", "seconds": 1.0, "reused": False, "calls": 0}]
    con.execute("INSERT INTO meta VALUES ('study', ?)", (json.dumps({"stage_uses": uses, "wall_seconds": 200.0}),))
    con.executemany("INSERT INTO stages VALUES (?,?,?,?,?,?,?,?,?)", [
        ("a", "generate_pool", "x", 1, "done", 0.0, 30.0, 30.0, "{}"),
        ("b", "train", "x", 1, "done", 30.0, 90.0, 60.0, "{}"),
        ("c", "eval_winrate", "x", 0, "done", 190.0, 191.0, 1.0, "{}"),
    ])
    con.executemany("INSERT INTO generations VALUES (?, ?)", [("g1", 100.0), ("g2", 120.0), ("old", 10.0)])
    con.executemany("INSERT INTO judgments VALUES (?, ?)", [("j1", 150.0), ("j2", 189.0)])
    con.commit()
    con.close()
    return d


def test_read_study_and_breakdown(tmp_path):
    run = bench_e2e.read_study(_fake_run_dir(tmp_path))
    sp = run["spans"]
    assert sp["eval_answers"] == pytest.approx(30.0)  # last loop stage ends at 90, last answer at 120
    assert sp["eval_judging"] == pytest.approx(70.0)  # until the first eval stage at 190
    assert sp["eval_answers_n"] == 2 and sp["eval_judgments_n"] == 2
    rows, totals = bench_e2e.breakdown(run, 200.0)
    by = {r["part"]: r for r in rows}
    assert by["generate_pool"]["computed"] == 1 and by["generate_pool"]["reused"] == 1
    assert by["generate_pool"]["calls"] == 48
    assert by["evaluation judging (outside stages)"]["seconds"] == pytest.approx(70.0)
    other = by["other (start-up, imports, report, between stages)"]["seconds"]
    assert other == pytest.approx(200.0 - (30 + 60 + 1 + 30 + 70))
    assert rows[0]["part"] == "evaluation judging (outside stages)"  # sorted by seconds
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert "| part |" in bench_e2e.breakdown_table(rows)


GNU_TIME = """\tCommand being timed: "evalign ablate --preset cpu --set run.output_dir=/w/cpu"
\tUser time (seconds): 11892.10
\tPercent of CPU this job got: 189%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:44:31
\tMaximum resident set size (kbytes): 11953152
"""


def test_cpu_study_reads_a_finished_run_and_its_time_file(tmp_path):
    run_dir = _fake_run_dir(tmp_path)
    args = argparse.Namespace(cpu_run=run_dir, workdir=tmp_path / "w")
    no_time = bench_cpu_study.run(args)
    assert [r["key"] for r in no_time["rows"]] == ["ablate_cpu"]  # no peak RSS without the time file
    assert no_time["rows"][0]["evalign"] == pytest.approx(200.0 / 60)  # the study record's wall
    (tmp_path / "run.time").write_text(GNU_TIME)
    res = bench_cpu_study.run(args)
    wall, rss = res["rows"]
    assert wall["evalign"] == pytest.approx(104 + 31 / 60) and wall["met"] is True
    assert rss["evalign"] == pytest.approx(11953152 / 2**20) and rss["met"] is True
    (tmp_path / "run.time").write_text(GNU_TIME.replace("1:44:31", "2:00:01"))
    assert bench_cpu_study.run(args)["rows"][0]["met"] is False
    assert "| part |" in next(iter(res["tables"].values()))
    assert harness.parse_args(["--cpu-run", str(run_dir)]).cpu_run == run_dir
    assert "cpu_study" not in harness.DEFAULT_ITEMS  # two hours: only when named or read


def test_read_study_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        bench_e2e.read_study(tmp_path)
    d = _fake_run_dir(tmp_path)
    con = sqlite3.connect(d / "run.db")
    con.execute("DELETE FROM meta")
    con.commit()
    con.close()
    with pytest.raises(ValueError):
        bench_e2e.read_study(d)


# ----------------------------------------------------------------------------- scaling fits


def test_linfit_exact_line_and_power():
    f = scaling.linfit([64, 128, 256, 512], [2 * x + 10 for x in [64, 128, 256, 512]])
    assert f["b"] == pytest.approx(2.0) and f["a"] == pytest.approx(10.0) and f["r2"] == pytest.approx(1.0)
    f = scaling.linfit([1, 2, 4, 8], [3 * x for x in [1, 2, 4, 8]])
    assert f["exponent"] == pytest.approx(1.0)
    f = scaling.linfit([1, 2, 4, 8], [x * x for x in [1, 2, 4, 8]])
    assert f["exponent"] == pytest.approx(2.0)
    assert scaling.linfit([1], [1])["b"] is None
    assert scaling.linfit([2, 2], [1, 3])["b"] == 0.0


def test_scaling_analyse_and_render():
    results = []
    for n in (32, 64):
        for k in (2, 4):
            nk = n * k
            results.append({"N": n, "k": k, "wall": 3.0 * nk + 60, "samples": nk, "reward_calls": nk,
                            "creator_calls": n // 2, "pairs": n // 4, "epochs": 2,
                            "stages": {"generate": 0.5 * nk, "reward": 1.5 * nk, "evolve": 4.0 * (n // 2),
                                       "train": 2.0 * (n // 4) * 2}})
    fits = scaling.analyse(results)
    assert fits["reward"]["vs_size"]["b"] == pytest.approx(1.5)
    assert fits["reward"]["vs_Nk"]["r2"] == pytest.approx(1.0)
    assert fits["evolve"]["vs_size"]["b"] == pytest.approx(4.0)
    assert fits["total"]["vs_Nk"]["b"] == pytest.approx(3.0)
    md = scaling.render(results, fits)
    assert md.count("\n| 32 |") == 2 and "reward (" in md
    assert "s per judge call" in md
    assert not math.isnan(fits["generate"]["vs_Nk"]["exponent"])


def test_gpu_check_runs_its_stages_at_tiny_sizes(tmp_path):
    """benchmarks/gpu_check.sh end to end as the GPU box runs it (its wheel and package
    checks, then gpu_check.py); without CUDA, or with --tiny, every stage runs at tiny sizes."""
    import torch

    repo = BENCH.parent
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_BUDGET": "300", "EVALIGN_SITE": str(tmp_path / "site")}
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--out", str(tmp_path / "out"), "--tiny",
                           "--e2e", "off", "--work", str(tmp_path / "work")], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    if not torch.cuda.is_available():
        assert "no GPU: " in log and "skipped" in log
    assert "version needs unmet:" in log and "| stage | what ran |" in log
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = {r["stage"]: r for r in report["stages"]}
    assert set(rows) == {"sample", "reward", "dpo"}
    for row in rows.values():
        assert "error" not in row and "skipped" not in row, row
        assert row["flops"] > 0 and row["tflops"] >= 0 and row["seconds"] > 0, row
    assert rows["sample"]["generated_tokens"] > 0 and rows["reward"]["scores_finite"]
    assert rows["dpo"]["packing_fast_path"] and rows["dpo"]["steps"] >= 1
    assert set(rows["dpo"]["phases_s"]) == {"load", "trl_setup", "reference_pass", "train_loop", "save"}
