"""Prompt sources: the built-in seed set, JSONL/CSV files, and Hugging Face datasets.

``builtin:seed`` is the project's own set of single-turn prompts (no benchmark copies);
``FILE.jsonl`` / ``FILE.csv`` read the configured field; ``hf:NAME[:SPLIT]`` loads a dataset
(e.g. ``hf:HuggingFaceH4/ultrafeedback_binarized:train_prefs`` with field ``prompt``, the
prompts the paper uses; a local dataset directory works too). Every problem names the file
and line: an empty file, invalid UTF-8, a missing field; duplicates are dropped (or an
error, as configured) and oversized prompts are truncated or skipped with their lines.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from evalign.config import PromptsConfig
from evalign.errors import InputError
from evalign.fsutil import read_jsonl, read_lines

log = logging.getLogger(__name__)

BUILTIN = {
    "builtin:seed": "seed_prompts.jsonl",
    "builtin:eval": "eval_prompts.jsonl",
}


@dataclass(frozen=True)
class PromptRecord:
    text: str
    category: str | None = None
    source: str = ""
    line: int | None = None


def builtin_path(name: str) -> Path:
    return Path(str(resources.files("evalign") / "data" / name))


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def load_prompts(cfg: PromptsConfig, seed: int = 0) -> list[PromptRecord]:
    """Load, validate, dedupe, size-check, shuffle (seeded) and limit the prompt pool."""
    records = read_prompt_source(cfg.source, cfg.field)
    records = _check_sizes(records, cfg)
    records = _dedupe(records, cfg.source)
    if not records:
        raise InputError(f"{cfg.source}: no usable prompts left after checks; fix the file or the limits")
    if cfg.shuffle:
        random.Random(seed).shuffle(records)
    if cfg.limit:
        records = records[: cfg.limit]
    return records


def read_prompt_source(source: str, field: str = "prompt") -> list[PromptRecord]:
    if source in BUILTIN:
        return _read_jsonl(builtin_path(BUILTIN[source]), "prompt", source)
    if source.startswith("hf:"):
        return _read_hf(source[3:], field)
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(
            f"prompt source '{source}' not found; give builtin:seed, a .jsonl/.csv file, or hf:DATASET[:SPLIT]"
        )
    if path.suffix.lower() == ".csv":
        return _read_csv(path, field)
    return _read_jsonl(path, field, str(path))


_EMPTY_FIX = "add one prompt per line"


def _read_jsonl(path: Path, field: str, source: str) -> list[PromptRecord]:
    out = []
    for lineno, obj in read_jsonl(path, if_empty=_EMPTY_FIX):
        if not isinstance(obj, dict) or field not in obj:
            raise InputError(
                f"{path} line {lineno}: missing field '{field}'; set prompts.field to the key that holds the prompt"
            )
        value = obj[field]
        if isinstance(value, list):  # chat format: take the first user message
            value = next((m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"), None)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{path} line {lineno}: field '{field}' must be a non-empty string")
        out.append(PromptRecord(value.strip(), obj.get("category"), source, lineno))
    if not out:
        raise InputError(f"{path}: the file has no prompts; add one JSON object per line")
    return out


def _read_csv(path: Path, field: str) -> list[PromptRecord]:
    lines = dict(read_lines(path, if_empty=_EMPTY_FIX))
    reader = csv.DictReader(io.StringIO("\n".join(lines[i] for i in sorted(lines))))
    if field not in (reader.fieldnames or []):
        raise InputError(f"{path} line 1: no column '{field}' (columns: {reader.fieldnames}); set prompts.field")
    out = []
    for row in reader:
        lineno = reader.line_num
        value = (row.get(field) or "").strip()
        if not value:
            raise InputError(f"{path} line {lineno}: column '{field}' is empty; remove the row or fill it")
        out.append(PromptRecord(value, row.get("category"), str(path), lineno))
    if not out:
        raise InputError(f"{path}: the file has no rows; add a header and one prompt per row")
    return out


def _read_hf(spec: str, field: str) -> list[PromptRecord]:
    """``NAME[:SPLIT]``: a hub dataset or a local dataset directory (save_to_disk or files)."""
    import datasets

    name, _, split = spec.partition(":")
    split = split or "train"
    try:
        saved = Path(name).is_dir() and any(
            (Path(name) / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))
        if saved:  # a datasets.save_to_disk directory
            ds = datasets.load_from_disk(name)
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - many failure types, one message for the user
        raise InputError(
            f"dataset '{name}' split '{split}' could not be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); check the name, split and network access"
        ) from None
    if field not in ds.column_names:
        raise InputError(f"dataset '{name}': no column '{field}' (columns: {ds.column_names}); set prompts.field")
    out = []
    for i, value in enumerate(ds[field]):
        if isinstance(value, list):
            value = next((m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"), "")
        if isinstance(value, str) and value.strip():
            out.append(PromptRecord(value.strip(), None, f"hf:{name}:{split}", i + 1))
    return out


def _check_sizes(records: list[PromptRecord], cfg: PromptsConfig) -> list[PromptRecord]:
    big = [r for r in records if len(r.text) > cfg.max_chars]
    if not big:
        return records
    lines = ", ".join(str(r.line) for r in big[:10]) + (" ..." if len(big) > 10 else "")
    if cfg.oversized == "error":
        raise InputError(
            f"{cfg.source}: {len(big)} prompts longer than prompts.max_chars={cfg.max_chars} (lines {lines}); "
            "raise max_chars or set prompts.oversized to truncate or skip"
        )
    if cfg.oversized == "truncate":
        log.warning("%s: truncated %d prompts to %d characters (lines %s)", cfg.source, len(big), cfg.max_chars, lines)
        return [PromptRecord(r.text[: cfg.max_chars], r.category, r.source, r.line) if r in big else r for r in records]
    log.warning("%s: skipped %d prompts longer than %d characters (lines %s)", cfg.source, len(big), cfg.max_chars, lines)
    return [r for r in records if len(r.text) <= cfg.max_chars]


def _dedupe(records: list[PromptRecord], source: str) -> list[PromptRecord]:
    seen: dict[str, int | None] = {}
    out, dupes = [], []
    for r in records:
        k = _norm(r.text)
        if k in seen:
            dupes.append(f"{r.line} (= {seen[k]})")
            continue
        seen[k] = r.line
        out.append(r)
    if dupes:
        shown = ", ".join(dupes[:10]) + (" ..." if len(dupes) > 10 else "")
        log.warning("%s: dropped %d duplicate prompts (lines %s)", source, len(dupes), shown)
    return out
