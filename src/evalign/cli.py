"""The ``evalign`` command: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import shlex
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from evalign.errors import EvalignError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="eva: Evolving Alignment via Asymmetric Self-Play — runs, ablations, evaluation.",
    pretty_exceptions_enable=False,
)

#: What main() reports when a command is interrupted: the run directory it works in.
_CONTEXT: dict[str, object] = {"run_dir": None, "started": time.time(), "signal": None}

ConfigArg = Annotated[Optional[Path], typer.Argument(help="Run config (YAML).", show_default=False)]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", help="A config shipped with evalign.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a field: a.b=value (repeatable).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or status lines.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr too.")]


def _load(config: Path | None, preset: str | None, overrides: list[str] | None):
    from evalign.config import load_config

    if config is None and preset is None:
        preset = "quickstart"
    cfg = load_config(config, preset=preset, overrides=overrides or [])
    _CONTEXT["run_dir"] = cfg.run_dir
    return cfg


def _quiet(q: bool) -> None:
    from evalign.progress import set_quiet

    if q:
        set_quiet(True)


def _print_result(result) -> None:
    print()
    print(result.table_markdown, end="")
    print(f"run directory: {result.run_dir}")
    print(f"report: {result.html}")


@app.command()
def run(config: ConfigArg = None, preset: PresetOpt = None, set_: SetOpt = None, quiet: QuietOpt = False,
        verbose: VerboseOpt = False) -> None:
    """Run T eva iterations of one config (resumes if the run directory exists)."""
    from evalign.run.study import run_study
    from evalign.config import ArmSpec

    _quiet(quiet)
    cfg = _load(config, preset, set_)
    arm = ArmSpec(name="eva" if cfg.creator.enabled else "no-creator", description="this config")
    result = run_study(cfg, arms=[arm], seeds=1, verbose=verbose, single=True)
    _print_result(result)
    _print_checkpoints(result.run_dir)


def _print_checkpoints(run_dir: str) -> None:
    from evalign.report.record import StudyRecord
    from evalign.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        study = StudyRecord.from_json(store.get_meta("study"))
    for name, arm in study.arms.items():
        for seed, entry in arm.seeds.items():
            if entry.checkpoints:
                print(f"trained checkpoint ({name}, seed {seed}): {entry.checkpoints[-1]}")
    print(f"run store: {Path(run_dir) / 'run.db'}")


@app.command()
def ablate(
    config: ConfigArg = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    arm: Annotated[Optional[list[str]], typer.Option("--arm", help="Run only this arm (repeatable).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Seeds per arm.")] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the ablation study: every arm from one start, then the table, plots and report."""
    from evalign.run.study import resolve_arms, run_study

    _quiet(quiet)
    cfg = _load(config, preset, set_)
    result = run_study(cfg, arms=resolve_arms(cfg, arm), seeds=seeds, verbose=verbose)
    _print_result(result)


@app.command(name="eval")
def eval_(
    model: Annotated[str, typer.Option("--model", help="Model: built-in name, checkpoint directory or hub id.")],
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Baseline model (default: the model "
                                                    "itself, resampled with another seed).")] = None,
    baseline_answers: Annotated[Optional[Path], typer.Option(
        "--baseline-answers", help="Reference answers: AlpacaEval JSON or Arena-Hard answer JSONL.")] = None,
    baseline_mt_answers: Annotated[Optional[Path], typer.Option(
        "--baseline-mt-answers", help="With --baseline-answers: MT-Bench model_answer JSONL, to score the baseline too.")] = None,
    config: ConfigArg = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory for answers and judgments.")] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate a model against a baseline: win rate (both orders, CI, LC) and average score."""
    from evalign.run.compare import eval_run_dir, evaluate_models

    _quiet(quiet)
    cfg = _load(config, preset, set_)
    _CONTEXT["run_dir"] = eval_run_dir(model, out)
    outcome = evaluate_models(cfg, model, baseline=baseline, baseline_answers=baseline_answers,
                              baseline_mt_answers=baseline_mt_answers, out_dir=out, verbose=verbose)
    print(outcome.table)
    for line in outcome.lines:
        print(line)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Rebuild the tables, plots and HTML report from a run's store."""
    import errno

    from evalign.report import build_report
    from evalign.run.session import not_writable, open_store

    if not (run_dir / "run.db").is_file():
        raise EvalignError(f"{run_dir} is not an evalign run directory (no run.db)")
    _CONTEXT["run_dir"] = run_dir
    fix = "report a writable copy of it"
    try:
        with open_store(run_dir, elsewhere=fix) as store:
            result = build_report(store)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise EvalignError(not_writable(run_dir, exc.strerror or str(exc), fix)) from None
    _print_result(result)
    if result.missing:
        raise EvalignError(f"the report of {run_dir} is incomplete, its table lacks the evaluation of "
                           f"{'; '.join(result.missing)}; finish the run (rerun the command that started it), "
                           "then report again")


@app.command()
def models(
    prepare: Annotated[bool, typer.Option("--prepare", help="Assemble and verify the built-in GGUFs.")] = False,
    materialize: Annotated[bool, typer.Option("--materialize", help="Also dequantize them into HF checkpoints "
                                              "(needed for transformers/TRL).")] = False,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="Only this built-in model.")] = None,
) -> None:
    """List the built-in models and their state; prepare them ahead of a run."""
    from evalign import weights as m
    from evalign.progress import console

    names = name or list(m.BUILTIN_MODELS)
    for n in names:
        if n not in m.BUILTIN_MODELS:
            raise EvalignError(f"unknown built-in model '{n}'; built-in: {', '.join(m.BUILTIN_MODELS)}")
        if prepare or materialize:
            console.print(f"preparing {n} ...", highlight=False)
            m.gguf_path(n)
        if materialize:
            m.materialize(n)
    from rich.table import Table

    table = Table(title="built-in models")
    table.add_column("name", no_wrap=True)  # names are copied into configs: never split them
    for col in ("role", "package", "assembled", "materialized", "size on disk"):
        table.add_column(col)
    for row in m.builtin_status():
        size = (row["gguf_bytes"] + row["hf_bytes"]) / 1e6
        table.add_row(row["name"], row["role"], "yes" if row["installed"] else "no",
                      "yes" if row["assembled"] else "no", "yes" if row["materialized"] else "no", f"{size:.0f} MB")
    console.print(table)
    console.print(f"cache: {m.cache_dir()}", highlight=False)


@app.command()
def generate(
    model: Annotated[str, typer.Option("--model", help="Built-in name, checkpoint/GGUF path or hub id.")] = "smollm2-135m-instruct",
    backend: Annotated[str, typer.Option("--backend", help="auto | transformers | llamacpp | vllm | openai")] = "auto",
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", help="A prompt (repeatable).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Without --prompt: the first N built-in seed prompts.")] = 8,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Samples per prompt.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of sample 0 (sample j uses seed + j).")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 64,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0)] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", min=0.01, max=1.0)] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per prompt on stdout.")] = False,
) -> None:
    """Generate seeded samples from any model (a demo of the backends; same seeds, same text)."""
    import json
    import time

    from evalign.backends import load_llm
    from evalign.backends.base import GenParams
    from evalign.config import ModelSpec, PromptsConfig
    from evalign.generation import user
    from evalign.prompts import load_prompts

    spec = ModelSpec(model=model, backend=backend)  # type: ignore[arg-type]
    texts = prompt or [r.text for r in load_prompts(PromptsConfig(limit=limit, shuffle=False))]
    with load_llm(spec) as llm:
        t0 = time.perf_counter()
        out = llm.generate([user(t) for t in texts], GenParams(max_new_tokens, temperature, top_p),
                           [seed + j for j in range(samples)])
        seconds = time.perf_counter() - t0
    tokens = sum(g.completion_tokens for row in out for g in row)
    for text, row in zip(texts, out):
        if as_json:
            print(json.dumps({"prompt": text, "samples": [{"seed": g.seed, "text": g.text} for g in row]},
                             ensure_ascii=False))
        else:
            print(f"### {text}")
            for g in row:
                print(f"[seed {g.seed}] {g.text}\n")
    print(f"{len(texts)} prompts x {samples} samples: {tokens} tokens in {seconds:.1f}s "
          f"({tokens / max(seconds, 1e-9):.1f} tokens/s) with {llm.model_id}", file=sys.stderr)


@app.command(name="judge-check")
def judge_check(
    judge: Annotated[Optional[str], typer.Option("--judge", help="Judge or reward model (default: eval.judge).")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="Backend of --judge.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="pairwise | pointwise | pairwise_anchor | classifier | all")] = "all",
    labeled: Annotated[Optional[Path], typer.Option("--labeled", help="Labeled pairs JSONL (default: built-in).")] = None,
    mt_judgments: Annotated[Optional[Path], typer.Option("--mt-judgments", help="MT-Bench model_judgment file.")] = None,
    mt_answers: Annotated[Optional[Path], typer.Option("--mt-answers", help="MT-Bench model_answer directory.")] = None,
    mt_questions: Annotated[Optional[Path], typer.Option("--mt-questions", help="MT-Bench question.jsonl.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use N labeled pairs, spread over category and difficulty.")] = None,
    variant: Annotated[Optional[list[str]], typer.Option("--variant", help="Judge variant (repeatable).")] = None,
    config: ConfigArg = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to cache judgments and write results.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure a judge or reward model on labeled pairs: accuracy, position bias, agreement, speed."""
    from evalign.eval.judge_check import format_report, run_judge_check

    _quiet(quiet)
    cfg = _load(config, preset, set_)
    results = run_judge_check(cfg, judge=judge, backend=backend, kind=kind, labeled=labeled,
                              mt_judgments=mt_judgments, mt_answers=mt_answers, mt_questions=mt_questions,
                              limit=limit, variants=variant, out=out)
    print(format_report(results, out))


@app.command()
def config(config: ConfigArg = None, preset: PresetOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config (after preset, file and --set)."""
    print(_load(config, preset, set_).to_yaml(), end="")


@app.command()
def presets() -> None:
    """List the configs shipped with evalign."""
    from evalign.config import preset_names

    for name in preset_names():
        print(name)


def _command_line() -> str:
    """The command as the user typed it (to rerun it): ``evalign ARGS`` or ``python -m evalign.cli ARGS``."""
    prog = "evalign" if Path(sys.argv[0]).name == "evalign" else "python -m evalign.cli"
    return " ".join([prog, shlex.join(sys.argv[1:])]).strip()


def _where_stopped() -> str:
    """The stage this process was running when it stopped, read back from the run store."""
    run_dir = _CONTEXT["run_dir"]
    if run_dir is None:
        return ""
    where = f" in run directory {run_dir}"
    try:
        from evalign.store import RunStore

        with RunStore(run_dir, readonly=True) as store:  # type: ignore[arg-type]
            row = store.db.execute(
                "SELECT name, arm, iteration FROM stages WHERE status = 'running' AND started_at >= ? "
                "ORDER BY started_at DESC LIMIT 1", (_CONTEXT["started"],)).fetchone()
            # work between stages (an evaluation answers and judges before its eval stages)
            last = None if row is not None else store.db.execute(
                "SELECT name, arm, iteration FROM stages WHERE status = 'done' AND finished_at >= ? "
                "ORDER BY finished_at DESC LIMIT 1", (_CONTEXT["started"],)).fetchone()
    except Exception:  # noqa: BLE001 - no store yet, or unreadable: say only where
        return where
    if row is None and last is None:
        return f" before its first stage{where}"
    return (f" during stage {_stage_label(row)}" if row is not None else f" after stage {_stage_label(last)}") + where


def _stage_label(row) -> str:
    detail = ", ".join(x for x in (f"arm {row['arm']}" if row["arm"] not in (None, "*") else "",
                                   f"iteration {row['iteration']}" if row["iteration"] else "") if x)
    return row["name"] + (f" ({detail})" if detail else "")


def _interrupted() -> None:
    sig = _CONTEXT["signal"] or "Ctrl-C"
    if _CONTEXT["run_dir"] is None:  # a command without a run (generate, models): nothing to resume
        print(f"interrupted by {sig}; rerun with: {_command_line()}", file=sys.stderr)
    else:
        print(f"interrupted by {sig}{_where_stopped()}; finished stages are kept; resume with: "
              f"{_command_line()}", file=sys.stderr)
    sys.exit(143 if sig == "SIGTERM" else 130)


def _on_sigterm(signum, frame) -> None:
    _CONTEXT["signal"] = "SIGTERM"
    raise KeyboardInterrupt


def _usage_error(exc: Exception) -> None:
    """A click/typer usage error (unknown option, missing or bad value) as one line, exit 2."""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "evalign"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(str(message).split()).rstrip(".")
    if not message:  # a bare command: its help is already printed
        sys.exit(getattr(exc, "exit_code", 2))
    print(f"error: {message}; see '{path} --help'", file=sys.stderr)
    sys.exit(2)


def _is_usage_error(exc: BaseException) -> bool:
    # The ClickException of the click typer uses (typer may vendor its own copy), and click's.
    kinds: list[type] = [c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"]
    try:
        import click

        kinds.append(click.exceptions.ClickException)
    except ImportError:  # pragma: no cover - typer vendors its click
        pass
    return isinstance(exc, tuple(kinds))


def main() -> None:
    _CONTEXT["started"] = time.time()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = app(standalone_mode=False)
    except EvalignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except sqlite3.DatabaseError as exc:
        msg = str(exc)
        if "disk is full" in msg or "disk I/O" in msg:
            print(f"error: the run store could not be written ({exc}); free disk space and rerun: "
                  "finished stages are kept", file=sys.stderr)
            sys.exit(2)
        run_dir = _CONTEXT["run_dir"]
        if run_dir is None:
            raise
        from evalign.run.session import store_error

        print(f"error: {store_error(Path(run_dir), exc)}", file=sys.stderr)  # type: ignore[arg-type]
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        if _is_usage_error(exc):
            _usage_error(exc)
        if isinstance(exc, typer.Abort):
            sys.exit(1)
        raise
    if rc == 130:  # typer turns a KeyboardInterrupt inside the command into Exit(130) and returns it
        _interrupted()
    if isinstance(rc, int) and rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()
