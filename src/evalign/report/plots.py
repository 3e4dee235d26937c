"""The study's plots as PNGs: win rate and score per arm (95% CIs), informativeness of the
prompt pool before vs after evolution, answer length per arm, reward vs response length.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure`` rendered by the
Agg canvas) rather than pyplot: nothing global is touched, so building a report from a
notebook does not switch the notebook's backend, and no figure outlives its function.
Output is deterministic: default style, no jitter, no timestamps in the PNG metadata.

A plot whose data is empty is skipped (not written); ``PLOTS`` names every plot so the HTML
page can say "no data for …" in its place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalign.creator.operators import operator_label

# (file stem, caption): the fixed order of make_plots' output and of the HTML page.
PLOTS: list[tuple[str, str]] = [
    ("winrate", "Win rate against θ0 per arm, with 95% bootstrap CI"),
    ("score", "Average 1–10 score per arm, with 95% bootstrap CI"),
    ("informativeness", "Informativeness (reward gap) of the pool before evolution vs the evolved prompts, per operator"),
    ("answer_length", "Evaluation answer length per arm"),
    ("reward_length", "Reward vs response length of scored policy samples"),
]

DEFAULT_COLOR = "#d95f02"  # the default (eva) arm
ARM_COLOR = "#4c72b0"
REF_COLOR = "#8c8c8c"  # θ0, the reference everything is compared against
START_COLOR = "#66a61e"  # θ1, the shared first round every arm's own round starts from
THETA0 = "theta0"
DPI = 110


def make_plots(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the plots that have data into ``out_dir``; return their paths in ``PLOTS`` order."""
    import matplotlib.style

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {
        "winrate": _winrate,
        "score": _score,
        "informativeness": _informativeness,
        "answer_length": _answer_length,
        "reward_length": _reward_length,
    }
    paths = []
    with matplotlib.style.context("default"):
        for name, _ in PLOTS:
            path = out / f"{name}.png"
            fig = makers[name](results)
            if fig is None:
                path.unlink(missing_ok=True)  # a stale plot from an earlier report must not linger
                continue
            fig.savefig(path, dpi=DPI, metadata={"Software": None})
            paths.append(path)
    return paths


# ---------------------------------------------------------------- helpers


def _figure(n_items: int, height: float = 4.2):
    from matplotlib.figure import Figure

    width = min(14.0, max(6.4, 1.0 + 0.85 * n_items))
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _color(arm: str, results: dict[str, Any]) -> str:
    if arm == results.get("default_arm"):
        return DEFAULT_COLOR
    if arm == THETA0:
        return REF_COLOR
    if arm == results.get("start_arm"):
        return START_COLOR
    return ARM_COLOR


def _set_arm_ticks(ax, labels: Sequence[str]) -> None:
    ax.set_xticks(range(len(labels)))
    long = len(labels) > 4 or any(len(lab) > 14 for lab in labels)
    ax.set_xticklabels(labels, rotation=30 if long else 0, ha="right" if long else "center",
                       rotation_mode="anchor" if long else "default")


def _legend_default(ax, results: dict[str, Any], arms: Sequence[str]) -> None:
    """Explain the colours actually used (none needed when every item has the same one)."""
    from matplotlib.patches import Patch

    default = results.get("default_arm")
    labels = {DEFAULT_COLOR: f"default arm ({default})", REF_COLOR: "θ0 (start policy)",
              START_COLOR: f"{results.get('start_arm')} (shared first round)", ARM_COLOR: "other arms"}
    used = {_color(a, results) for a in arms}
    if len(used) > 1 or DEFAULT_COLOR in used:
        handles = [Patch(color=c, label=lab) for c, lab in labels.items() if c in used]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def _n_text(ns: Sequence[int], unit: str) -> str:
    ns = sorted(set(ns))
    if not ns:
        return ""
    if len(ns) == 1:
        return f"n = {ns[0]} {unit}"
    return f"n = {ns[0]}–{ns[-1]} {unit} (per arm below)"


def _finite(values) -> list[float]:
    out = []
    for v in values or []:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


# ---------------------------------------------------------------- per-arm estimates


def _estimate_bars(results: dict[str, Any], key: str, scale: float, ylabel: str, title: str,
                   unit: str, ylim: tuple[float, float], ref: float | None):
    rows = results.get("rows") or []
    if not any(r.get(key) for r in rows):
        return None
    fig, ax = _figure(len(rows))
    arms, labels, ns = [], [], []
    for i, r in enumerate(rows):
        arm = str(r.get("arm", "?"))
        arms.append(arm)
        e = r.get(key)
        if not e:
            labels.append(f"{arm} (n=—)")
            ax.text(i, 0.5, "not evaluated", transform=ax.get_xaxis_transform(), ha="center", va="center",
                    fontsize="small", color="#666666", rotation=90)
            continue
        n = int(e.get("n") or 0)
        ns.append(n)
        labels.append(f"{arm} (n={n})")
        v, lo, hi = (scale * float(e[k]) for k in ("value", "ci_low", "ci_high"))
        color = _color(arm, results)
        ax.bar(i, v, color=color, alpha=0.85, width=0.65, zorder=2)
        ax.errorbar(i, v, yerr=[[max(v - lo, 0.0)], [max(hi - v, 0.0)]], fmt="none", ecolor="black",
                    elinewidth=1.2, capsize=5, zorder=3)
        ax.annotate(f"{v:.1f}" if scale != 1 else f"{v:.2f}", (i, hi), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize="small")
    if ref is not None:
        ax.axhline(ref, color="black", linestyle="--", linewidth=1, zorder=1, label=None)
    pad = max(0.0, (3 - len(rows)) / 2)  # one or two arms: keep bars bar-shaped
    ax.set_xlim(-0.6 - pad, len(rows) - 0.4 + pad)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    _set_arm_ticks(ax, labels)
    n_text = _n_text(ns, unit)
    ax.set_title(f"{title}\n{n_text}" if n_text else title)
    _legend_default(ax, results, arms)
    return fig


def _ci_kind(results: dict[str, Any]) -> str:
    """What the bars' intervals resample: "95% CI" over prompts, or two-level over seeds first."""
    n = (results.get("intervals") or {}).get("n_seeds") or 1
    return "95% CI" if n < 2 else f"95% CI, two-level: {n} seeds, then prompts"


def _winrate(results: dict[str, Any]):
    from matplotlib.ticker import PercentFormatter

    fig = _estimate_bars(results, "win_rate", 100.0, "win rate vs θ0", f"Win rate vs θ0 ({_ci_kind(results)})",
                         "prompts", (0, 100), 50.0)
    if fig is not None:
        fig.axes[0].yaxis.set_major_formatter(PercentFormatter(100))
    return fig


def _score(results: dict[str, Any]):
    return _estimate_bars(results, "score", 1.0, "average score (1–10)", f"Average score ({_ci_kind(results)})",
                          "questions", (0, 10.5), None)


# ---------------------------------------------------------------- distributions


def _informativeness(results: dict[str, Any]):
    info = results.get("informativeness") or {}
    metric = info.get("metric") or "gap"
    metric_label = "reward gap" if metric == "gap" else f"informativeness ({metric})"
    groups = [("pool before evolution", _finite(info.get("before")))]
    for op, vals in sorted((info.get("after") or {}).items()):
        groups.append((f"evolved: {operator_label(op)}", _finite(vals)))
    groups = [(lab, vals) for lab, vals in groups if vals]
    if not groups:
        return None
    fig, ax = _figure(len(groups))
    labels = [f"{lab} (n={len(vals)})" for lab, vals in groups]
    bp = ax.boxplot([vals for _, vals in groups], positions=range(len(groups)), widths=0.55,
                    showmeans=True, patch_artist=True, meanprops={"marker": "D", "markerfacecolor": "white",
                                                                  "markeredgecolor": "black", "markersize": 5})
    for k, box in enumerate(bp["boxes"]):
        box.set_facecolor(REF_COLOR if k == 0 and groups[0][0].startswith("pool") else DEFAULT_COLOR)
        box.set_alpha(0.6)
    for med in bp["medians"]:
        med.set_color("black")
    _set_arm_ticks(ax, labels)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(metric_label + (" (max − min reward over k samples)" if metric == "gap" else ""))
    ax.grid(axis="y", alpha=0.3)
    total = sum(len(v) for _, v in groups)
    ax.set_title(f"Informativeness: {metric_label} before vs after evolution\n"
                 f"n = {total} prompts (box: quartiles, ◇: mean)")
    return fig


def _answer_length(results: dict[str, Any]):
    lengths = results.get("answer_lengths") or {}
    order = [str(r.get("arm")) for r in results.get("rows") or []]
    arms = [a for a in order if _finite(lengths.get(a))]
    arms += sorted(a for a in lengths if a not in arms and _finite(lengths.get(a)))
    if not arms:
        return None
    fig, ax = _figure(len(arms))
    data = [_finite(lengths[a]) for a in arms]
    bp = ax.boxplot(data, positions=range(len(arms)), widths=0.55, patch_artist=True, showmeans=True,
                    meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                               "markersize": 5},
                    flierprops={"marker": ".", "markersize": 4, "alpha": 0.5})
    for arm, box in zip(arms, bp["boxes"]):
        box.set_facecolor(_color(arm, results))
        box.set_alpha(0.7)
    for med in bp["medians"]:
        med.set_color("black")
    _set_arm_ticks(ax, [f"{a} (n={len(d)})" for a, d in zip(arms, data)])
    ax.set_ylabel("answer length (characters)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Evaluation answer length per arm\n{_n_text([len(d) for d in data], 'answers')}"
                 " (box: quartiles, ◇: mean)")
    _legend_default(ax, results, arms)
    return fig


def _reward_length(results: dict[str, Any]):
    pts = []
    for p in results.get("reward_length") or []:
        xy = _finite([p.get("length"), p.get("reward")]) if isinstance(p, dict) else []
        if len(xy) == 2:
            pts.append(xy)
    if not pts:
        return None
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    fig, ax = _figure(8)
    ax.scatter(x, y, s=10, alpha=min(0.8, max(0.35, 100 / len(pts))), color=ARM_COLOR, edgecolors="none")
    rho_text = "Spearman ρ undefined"
    if len(pts) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        from scipy import stats

        res = stats.spearmanr(x, y)
        rho, p = float(res.statistic), float(res.pvalue)
        rho_text = f"Spearman ρ = {rho:+.2f} (p = {p:.2g})"
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(float(x.min()), float(x.max()), 50)
        ax.plot(xs, slope * xs + intercept, color=DEFAULT_COLOR, linewidth=2,
                label=f"least-squares fit: {slope * 100:+.3g} reward / 100 chars")
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("response length (characters)")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.set_title(f"Reward vs response length\nn = {len(pts)} responses, {rho_text}")
    return fig
