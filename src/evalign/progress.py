"""Progress bars (rich) and structured logs.

Long work goes through :func:`track`, which shows rate and ETA on a terminal and stays
silent under ``--quiet`` (or ``EVALIGN_QUIET=1``). Log lines are JSON objects in
``RUN_DIR/logs/evalign.log`` so scripts can parse them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_state = {"quiet": os.environ.get("EVALIGN_QUIET", "") not in ("", "0")}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


class _Rate(TextColumn):
    def __init__(self, unit: str) -> None:
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        return f"{speed:.2f} {self.unit}/s" if speed else f"- {self.unit}/s"


@contextlib.contextmanager
def track(description: str, total: int, unit: str = "it") -> Iterator:
    """``with track("judging", n) as advance: advance(1)`` — a bar with rate and ETA."""
    if is_quiet() or total <= 0 or not console.is_terminal:
        yield lambda n=1: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def say(message: str) -> None:
    """A status line for humans (suppressed by --quiet)."""
    if not is_quiet():
        console.print(message, highlight=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(run_dir: str | os.PathLike[str] | None, verbose: bool = False) -> None:
    """JSON lines to RUN_DIR/logs/evalign.log; warnings (or all, with verbose) to stderr."""
    root = logging.getLogger("evalign")
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        if getattr(h, "_evalign", False):
            root.removeHandler(h)
            h.close()
    if run_dir is not None:
        path = Path(run_dir) / "logs"
        path.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path / "evalign.log", encoding="utf-8")
        fh.setFormatter(JsonFormatter())
        fh.setLevel(logging.DEBUG)
        fh._evalign = True  # type: ignore[attr-defined]
        root.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    sh.setLevel(logging.DEBUG if verbose else logging.WARNING)
    sh._evalign = True  # type: ignore[attr-defined]
    root.addHandler(sh)
    root.propagate = False


def log_event(logger: logging.Logger, msg: str, **fields) -> None:
    """Log ``msg`` with structured fields that land as JSON keys in the log file."""
    logger.info(msg, extra={"fields": fields})
