"""AlpacaEval 2.0's length-controlled win rate, computed by alpaca_eval's own code.

AlpacaEval's LC (``length_controlled_v1``) is a logistic GLM of the preference on
tanh(Δlen / sd), the instruction's difficulty and a baseline indicator, fitted together with
the annotations of two length-gamed baselines (weight λ = 0.2) and predicted at Δlen = 0.
Instruction difficulty and the gamed annotations come from ``df_gamed.csv`` in the hub
dataset ``tatsu-lab/alpaca_eval``; they are defined per AlpacaEval instruction (its position
among the 805, the ``index`` column), so the official LC applies only when every evaluated
prompt is an AlpacaEval instruction, matched by its exact text.

When alpaca_eval is installed and ``eval.alpaca_eval_data`` is ``hf:tatsu-lab/alpaca_eval``
(downloaded once from the hub) or names a directory with
``df_gamed.csv`` and ``alpaca_eval.json`` (the 805 instructions in AlpacaEval's order;
``alpaca_eval_gpt4_baseline.json`` serves too), the LC
is ``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`` on a frame built from
evalign's outcomes, with the hub download served from that directory; its CI is
value ± 1.96 × alpaca_eval's ``lc_standard_error`` (the spread of its per-instruction
predictions: it leaves out the fit's own uncertainty, so it is narrower than a bootstrap and
is zero when the fit keeps no coefficient; refitting the cross-validated GLM on a thousand
resamples would take minutes). Otherwise evalign's simplified LC
(:func:`evalign.eval.stats.length_controlled_win_rate`, bootstrap CI) is used. Either way the
method travels with the number as a label. There is no reimplementation of the official
formula without the package: its fit is sklearn's cross-validated L1 logistic regression, and
only the package itself is a faithful copy of it. Checked against alpaca-eval 0.6.6.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from evalign.errors import InputError
from evalign.eval import formats, stats
from evalign.eval.sets import EvalPrompt

OFFICIAL_LC = "alpaca_eval length_controlled_v1 (official)"
SIMPLIFIED_LC = "simplified: outcome ~ 1 + tanh(Δlen/sd), no instruction difficulty, no regularisation"
GAMED_FILE = "df_gamed.csv"
INSTRUCTIONS_FILE = "alpaca_eval.json"  # or the 2.0 baseline's file: the same 805 instructions, same order
INSTRUCTION_FILES = (INSTRUCTIONS_FILE, "alpaca_eval_gpt4_baseline.json")
MODEL_NAME, BASELINE_NAME = "model", "baseline"  # generator_2 and generator_1 in the GLM's frame
Z95 = 1.959963984540054


def dataset_of(prompt: EvalPrompt) -> str:
    """AlpacaEval's ``dataset`` of a prompt: its source for an AlpacaEval set (sets.py keeps it
    as the category and numbers such prompts alpaca-N), else "evalign"."""
    if prompt.id.startswith("alpaca-") and prompt.category:
        return prompt.category
    return formats.ALPACA_DEFAULT_DATASET


def alpaca_eval_available() -> bool:
    try:
        import alpaca_eval.metrics.glm_winrate  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class AlpacaReference:
    """The AlpacaEval data the official LC needs: each instruction's position among the 805
    (``index``), and the path of ``df_gamed.csv``."""

    index: dict[str, int]
    gamed_path: Path

    def positions(self, instructions: Sequence[str]) -> list[int] | None:
        """AlpacaEval positions of ``instructions``, or None unless every one is AlpacaEval's."""
        found = [self.index.get(t) for t in instructions]
        return None if any(i is None for i in found) else found  # type: ignore[return-value]


HUB_SOURCE = "hf:tatsu-lab/alpaca_eval"


def hub_directory() -> Path:
    """The two files of :data:`HUB_SOURCE` in the Hugging Face cache (downloaded once; online)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(HUB_SOURCE.removeprefix("hf:"), repo_type="dataset",
                                      allow_patterns=[GAMED_FILE, INSTRUCTIONS_FILE]))
    except Exception as e:  # offline, or the hub refused: say how to work without it
        raise InputError(f"eval.alpaca_eval_data={HUB_SOURCE}: could not download {GAMED_FILE} and "
                         f"{INSTRUCTIONS_FILE} ({type(e).__name__}: {e}); download them elsewhere and pass "
                         "their directory instead") from e


def load_reference(directory: str | Path) -> AlpacaReference:
    """Read ``eval.alpaca_eval_data`` (a directory, or :data:`HUB_SOURCE` to fetch it from the
    hub); needs alpaca_eval installed, as only it computes the LC."""
    if not alpaca_eval_available():
        raise InputError("eval.alpaca_eval_data is set but alpaca_eval is not installed; "
                         "pip install alpaca-eval==0.6.6, or unset eval.alpaca_eval_data")
    root = hub_directory() if str(directory) == HUB_SOURCE else Path(directory).expanduser()
    gamed = root / GAMED_FILE
    listing = next((root / n for n in INSTRUCTION_FILES if (root / n).is_file()), root / INSTRUCTIONS_FILE)
    for f in (gamed, listing):
        if not f.is_file():
            raise InputError(
                f"eval.alpaca_eval_data: {f} not found; download it with `huggingface-cli download "
                f"tatsu-lab/alpaca_eval {GAMED_FILE} {INSTRUCTIONS_FILE} --repo-type dataset --local-dir {root}`"
            )
    what = "AlpacaEval instruction (an object with 'instruction')"
    texts = formats._read_json_list(listing, lambda r: formats.field(r, "instruction"), what)
    return AlpacaReference({t: i for i, t in enumerate(texts)}, gamed)


@contextmanager
def _local_hub(gamed_path: Path):
    """Serve alpaca_eval's hub download of df_gamed.csv from the local file."""
    from alpaca_eval.metrics import glm_winrate

    def download(*, filename: str, **_):
        if filename != GAMED_FILE:
            raise InputError(f"alpaca_eval asked for {filename}, which eval.alpaca_eval_data does not provide")
        return str(gamed_path)

    original = glm_winrate.hf_hub_download
    glm_winrate.hf_hub_download = download
    try:
        yield
    finally:
        glm_winrate.hf_hub_download = original


def annotation_frame(outcomes: Sequence[float], instructions: Sequence[str], model_answers: Sequence[str],
                     baseline_answers: Sequence[str], positions: Sequence[int]):
    """alpaca_eval's annotations as a DataFrame: the baseline is output_1, the model output_2,
    preference = 1 + P(model better); the frame's index is each instruction's AlpacaEval
    position, which the GLM reads as ``index``. Rows are in AlpacaEval's order, as its own
    annotations are: the GLM's cross-validation folds follow row order."""
    import pandas as pd

    frame = pd.DataFrame({
        "instruction": list(instructions), "output_1": list(baseline_answers), "generator_1": BASELINE_NAME,
        "output_2": list(model_answers), "generator_2": MODEL_NAME, "annotator": "evalign",
        "preference": [1.0 + o for o in outcomes],
    }, index=pd.Index(list(positions)))
    return frame.sort_index(kind="stable")


def official_lc(outcomes: Sequence[float], instructions: Sequence[str], model_answers: Sequence[str],
                baseline_answers: Sequence[str], reference: AlpacaReference) -> stats.Estimate | None:
    """alpaca_eval's length_controlled_v1 on these prompts; None where it does not apply."""
    positions = reference.positions(instructions)
    if positions is None:
        return None
    from alpaca_eval.metrics.glm_winrate import GLM_INFO, get_length_controlled_winrate

    if len(positions) < GLM_INFO["length_controlled_v1"]["kwargs"]["n_splits"]:
        return None  # fewer prompts than its cross-validation folds

    frame = annotation_frame(outcomes, instructions, model_answers, baseline_answers, positions)
    with _local_hub(reference.gamed_path), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.9 on alpaca_eval 0.6.6's arguments
        metrics = get_length_controlled_winrate(frame, save_weights_dir=None, is_warn_extreme_changes=False)
    value, se = float(metrics["length_controlled_winrate"]) / 100, float(metrics["lc_standard_error"]) / 100
    se = 0.0 if math.isnan(se) else se
    return stats.Estimate(value, max(0.0, value - Z95 * se), min(1.0, value + Z95 * se), len(frame))


def length_controlled(outcomes: Sequence[float], instructions: Sequence[str], model_answers: Sequence[str],
                      baseline_answers: Sequence[str], reference: AlpacaReference | None = None, *,
                      n_boot: int = 1000, seed: int = 0) -> tuple[stats.Estimate, str]:
    """The LC win rate of judged prompts and how it was computed (:data:`OFFICIAL_LC` or
    :data:`SIMPLIFIED_LC`). Every argument has one entry per prompt with an outcome."""
    if reference is not None:
        est = official_lc(outcomes, instructions, model_answers, baseline_answers, reference)
        if est is not None:
            return est, OFFICIAL_LC
    est = stats.length_controlled_win_rate(outcomes, [len(a) for a in model_answers],
                                           [len(a) for a in baseline_answers], n_boot=n_boot, seed=seed)
    return est, SIMPLIFIED_LC
