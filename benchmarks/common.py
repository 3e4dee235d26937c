"""Plumbing shared by the benchmark items: rows, ratios and targets, tables, peak memory.

Nothing here measures anything; the items (``bench_*.py``) do. ``tests/test_benchmarks.py``
checks this module without timing anything.

A *row* is one comparison: an evalign figure, the baseline figure measured in the same run,
their ratio, a target and whether it is met::

    row("evalign generate vs HF generate, one prompt at a time", "tokens/s",
        evalign=412.0, baseline=61.0, target=Target(">=", 5.0, on="ratio"))

``on`` says which number the target reads: ``ratio`` (evalign / baseline), ``evalign`` (the
evalign figure itself, e.g. a wall time in minutes or a loss difference) or ``overhead``
(baseline / evalign − 1 for rates: how much slower evalign is than a ceiling).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
LOCK = "/tmp/evalign-cpu.lock"


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    op: str  # ">=", "<=" or "within" (|value - 1| <= threshold, for a ratio that should stay near 1)
    value: float
    on: str = "ratio"  # "ratio" | "evalign" | "overhead"
    unit: str = ""  # how to print value: "x", "%", or a unit ("min")

    def __post_init__(self) -> None:
        if self.op not in (">=", "<=", "within"):
            raise ValueError(f"target op must be '>=', '<=' or 'within', got {self.op!r}")
        if self.on not in ("ratio", "evalign", "overhead"):
            raise ValueError(f"target 'on' must be ratio, evalign or overhead, got {self.on!r}")

    def text(self) -> str:
        if self.op == "within":
            return f"within ±{_g(self.value * 100)}%"
        sym = "≥" if self.op == ">=" else "≤"
        what = {"ratio": "", "evalign": "", "overhead": "overhead "}[self.on]
        if self.unit == "%":
            return f"{what}{sym} {_g(self.value * 100)}%"
        if self.unit == "x":
            return f"{what}{sym} {_g(self.value)}x"
        return f"{what}{sym} {_g(self.value)}{(' ' + self.unit) if self.unit else ''}"

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "value": self.value, "on": self.on, "unit": self.unit, "text": self.text()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Target | None":
        if not d:
            return None
        return cls(d["op"], float(d["value"]), d.get("on", "ratio"), d.get("unit", ""))


def _g(x: float) -> str:
    """A threshold as written by a person: 5, 1.5, 0.05 (no float noise like 10.000000000000002)."""
    return format(round(x, 6), "g")


def check(value: float | None, op: str, threshold: float) -> bool | None:
    """Whether ``value op threshold`` holds (``within``: |value − 1| <= threshold); None when
    the value is missing or not finite."""
    if value is None or not math.isfinite(value):
        return None
    if op == "within":
        return abs(value - 1.0) <= threshold
    return value >= threshold if op == ">=" else value <= threshold


def ratio(evalign: float | None, baseline: float | None) -> float | None:
    """evalign / baseline; None when either is missing or the baseline is zero."""
    if evalign is None or baseline is None or baseline == 0:
        return None
    if not (math.isfinite(evalign) and math.isfinite(baseline)):
        return None
    return evalign / baseline


def overhead(evalign_rate: float | None, ceiling_rate: float | None) -> float | None:
    """How much slower evalign is than a ceiling, for rates (calls/s): ceiling / evalign − 1.
    0.07 means evalign takes 7% more time than the ceiling for the same work."""
    r = ratio(ceiling_rate, evalign_rate)
    return None if r is None else r - 1.0


def row(name: str, unit: str, evalign: float | None, baseline: float | None = None, *,
        target: Target | None = None, baseline_label: str = "", note: str = "", key: str = "") -> dict[str, Any]:
    """One comparison row, with its ratio, overhead and whether its target is met."""
    r = ratio(evalign, baseline)
    oh = overhead(evalign, baseline) if baseline is not None else None
    met = None
    if target is not None:
        value = {"ratio": r, "evalign": evalign, "overhead": oh}[target.on]
        met = check(value, target.op, target.value)
    return {"key": key or slug(name), "name": name, "unit": unit, "evalign": evalign, "baseline": baseline,
            "baseline_label": baseline_label, "ratio": r, "overhead": oh,
            "target": target.as_dict() if target else None, "met": met, "note": note}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


# ----------------------------------------------------------------------------- formatting


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no exponent for everyday magnitudes)."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}".replace(",", " ") if abs(x) >= 10000 else str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0:
            return "0"
        mag = math.floor(math.log10(abs(x)))
        if mag >= digits - 1:
            return f"{x:,.0f}".replace(",", " ") if abs(x) >= 10000 else f"{x:.0f}"
        if mag < -4:
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits - 1 - mag}f}"
    return str(x)


def met_text(met: bool | None, target: dict | None) -> str:
    if target is None:
        return "n/a"
    return {True: "**yes**", False: "**NO**", None: "?"}[met]


def ratio_text(r: dict[str, Any]) -> str:
    t = r.get("target") or {}
    if t.get("on") == "overhead" and r.get("overhead") is not None:
        return f"{fmt(r['ratio'])} (overhead {fmt(r['overhead'] * 100)}%)"
    if r.get("ratio") is None:
        return "–"
    if t.get("unit") == "%" and t.get("on") == "ratio":
        return f"{fmt(r['ratio'] * 100)}%"
    return f"{fmt(r['ratio'])}x"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with ``fmt`` unless already strings."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def results_table(items: list[dict[str, Any]]) -> str:
    """The main table: one line per row of every item."""
    headers = ["item", "row", "unit", "evalign", "baseline (same run)", "ratio", "target", "met", "peak RSS"]
    rows = []
    for it in items:
        rss = it.get("peak_rss_mb")
        rss_text = f"{fmt(rss / 1024, 2)} GiB" if rss else "–"
        if it.get("error"):
            rows.append([it["item"], f"FAILED: {it['error'][:120]}", "", "", "", "", "", "?", rss_text])
            continue
        for i, r in enumerate(it.get("rows", [])):
            base = fmt(r["baseline"])
            if r.get("baseline_label"):
                base = f"{base} ({r['baseline_label']})"
            target = (r.get("target") or {}).get("text", "–")
            rows.append([it["item"] if i == 0 else "", r["name"], r["unit"], fmt(r["evalign"]), base,
                         ratio_text(r), target, met_text(r.get("met"), r.get("target")),
                         rss_text if i == 0 else ""])
    return markdown_table(headers, rows)


def render_markdown(report: dict[str, Any]) -> str:
    """latest.md: the table, then each item's notes, bounds and details."""
    out = [f"# evalign benchmark results ({report.get('mode', 'full')})", ""]
    m = report.get("machine", {})
    out.append(f"`{report.get('command', 'python benchmarks/run.py')}` — {report.get('started', '')}, "
               f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('mem_gib', '?')} GiB RAM, "
               f"torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}, trl {m.get('trl', '?')}, "
               f"llama-cpp-python {m.get('llama_cpp_python', '?')}. Every item ran in its own process under "
               f"`flock {LOCK}`; peak RSS is that process's maximum resident set.")
    out += ["", results_table(report["items"])]
    for it in report["items"]:
        out.append(f"## {it['item']}")
        out.append("")
        out.append(f"{fmt(it.get('seconds'))} s wall, peak RSS {fmt((it.get('peak_rss_mb') or 0) / 1024, 2)} GiB.")
        if it.get("error"):
            out += ["", "```", it.get("log_tail", "")[-3000:], "```"]
        for title, key in (("Notes", "notes"), ("Bounds", "bounds")):
            if it.get(key):
                out += ["", f"**{title}**", ""] + [f"- {n}" for n in it[key]]
        for name, table in (it.get("tables") or {}).items():
            out += ["", f"**{name}**", "", table]
        out.append("")
    return "\n".join(out)


def print_item(it: dict[str, Any]) -> None:
    """One item's rows on stdout as soon as it finishes."""
    print(results_table([it]), flush=True)
    for n in it.get("notes", []):
        print(f"  note: {n}", flush=True)
    for b in it.get("bounds", []):
        print(f"  bound: {b}", flush=True)
    print(flush=True)


# ----------------------------------------------------------------------------- processes


def maxrss_mb(ru_maxrss: int, system: str | None = None) -> float:
    """``ru_maxrss`` in MiB: Linux reports KiB, macOS bytes."""
    system = system or platform.system()
    return ru_maxrss / (1024 * 1024) if system == "Darwin" else ru_maxrss / 1024


def proc_status_kib(text: str, field: str = "VmHWM") -> int | None:
    """A ``kB`` field from /proc/PID/status text (VmHWM: peak RSS, VmRSS: current)."""
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) if m else None


def run_child(cmd: list[str], log_path: Path, timeout: float | None = None,
              env: dict[str, str] | None = None) -> tuple[int, float, float]:
    """Run ``cmd`` with its output in ``log_path``; (exit code, seconds, peak RSS MiB).

    The peak RSS comes from ``wait4``'s rusage: the child's own maximum resident set (and that
    of any descendants it waited for), so items measured in separate processes do not
    pollute each other's figure.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return -9, time.perf_counter() - t0, maxrss_mb(ru.ru_maxrss)
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, maxrss_mb(ru.ru_maxrss)


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    info: dict[str, Any] = {"python": platform.python_version(), "cores": len(os.sched_getaffinity(0))}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["cpu"] = m.group(1).strip() if m else platform.processor()
        flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
        fl = flags.group(1).split() if flags else []
        info["bf16_native"] = "avx512_bf16" in fl or "amx_bf16" in fl
    except OSError:
        info["cpu"] = platform.processor()
    try:
        mem = Path("/proc/meminfo").read_text()
        kib = proc_status_kib(mem, "MemTotal")
        info["mem_gib"] = round(kib / 1024 / 1024, 1) if kib else None
    except OSError:
        pass
    for pkg in ("torch", "transformers", "trl", "peft", "llama_cpp_python", "numpy"):
        try:
            info[pkg] = md.version(pkg.replace("_", "-"))
        except md.PackageNotFoundError:
            pass
    return info


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def merge_items(old: list[dict[str, Any]], new: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """Items of ``old`` replaced by those of ``new`` with the same name, in ``order``."""
    by_name = {it["item"]: it for it in old}
    by_name.update({it["item"]: it for it in new})
    known = [n for n in order if n in by_name]
    return [by_name[n] for n in known] + [it for n, it in by_name.items() if n not in order]


def log(msg: str) -> None:
    """A timestamped progress line from an item (goes to the item's log file)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def say_python() -> str:
    return sys.executable
