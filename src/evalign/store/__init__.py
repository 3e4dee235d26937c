"""The run directory: one SQLite database plus checkpoints, the resolved config and logs.

Layout::

    RUN_DIR/
      run.db            SQLite (WAL), readable with plain ``sqlite3``
      config.yaml       the resolved config of the last invocation
      run.lock          held (flock) by the process using the run
      checkpoints/      plain HF directories, each written atomically
      logs/evalign.log  structured log lines
      report/           tables, plots, HTML

Expensive unit work — a generation, a reward, a judgment — is cached under a content key
(model id, prompt, params, seed ...), committed in small transactions. A killed stage
therefore redoes only what was not committed, and two arms that ask for the same unit
share it. A stage is marked done (with its outputs) in the same transaction as its last
rows, so a stage is either done or redone from its cached units.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalign import faults
from evalign.hashing import key_of, sha  # noqa: F401  (re-exported: callers take keys from the store)
from evalign.errors import RunInUseError
from evalign.fsutil import atomic_write_text, remove_stale_temporaries
from evalign.store.cache import CacheThrough, cache_through  # noqa: F401  (re-exported)
from evalign.store.schema import SCHEMA, SCHEMA_VERSION


class RunStore:
    """One run directory. Open it with ``RunStore(path)``; use as a context manager."""

    def __init__(self, run_dir: str | os.PathLike[str], *, lock: bool = True, readonly: bool = False) -> None:
        self.dir = Path(run_dir)
        self.readonly = readonly
        self._in_tx = False
        self._stage: _OpenStage | None = None  # the stage being computed, for its durable accounting
        self._opened = time.time()
        self._process = f"wall:{os.getpid()}:{self._opened:.6f}"
        if readonly:
            if not (self.dir / "run.db").is_file():
                raise FileNotFoundError(f"{self.dir} is not an evalign run directory (no run.db)")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = None
        if lock and not readonly:
            self._acquire_lock()
            self._remove_stale_temporaries()
        # Escaped: a '?', '#' or '%' in the path would otherwise end or change the file name.
        uri = "file:" + urllib.parse.quote(str((self.dir / "run.db").absolute())) + ("?mode=ro" if readonly else "")
        self.db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            self._add_missing_columns()
            self._init_meta()

    # ------------------------------------------------------------------ lifecycle

    def _acquire_lock(self) -> None:
        path = self.dir / "run.lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            fh.close()
            raise RunInUseError(
                f"run {self.dir} is in use by PID {pid}; wait for it to finish or stop it, then rerun"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def _remove_stale_temporaries(self) -> None:
        """Leftovers of writes a kill interrupted, only where evalign writes in the run directory."""
        d = self.dir
        remove_stale_temporaries(d, d / "checkpoints", d / "report", d / "logs",
                                 *(p for p in (d / "launch").glob("*") if p.is_dir()))
        # Temporary checkpoints of evalign versions before the .evalign-tmp- prefix.
        for p in (d / "checkpoints").glob(".*.tmp"):
            if _LEGACY_CHECKPOINT_TMP.fullmatch(p.name) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None  # type: ignore[assignment]
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_missing_columns(self) -> None:
        """Columns later versions of this schema added (run directories of older versions)."""
        added = {
            "stages": (("calls", "INTEGER NOT NULL DEFAULT 0"), ("spent", "REAL NOT NULL DEFAULT 0")),
            "pairs": (("chosen_win_prob", "REAL"), ("rejected_win_prob", "REAL")),
        }
        for table, columns in added.items():
            have = {r["name"] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for col, decl in columns:
                if col not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")

    def _init_meta(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            with self.transaction():
                self.set_meta("schema_version", str(SCHEMA_VERSION))
                self.set_meta("created_at", str(time.time()))
        elif int(row["value"]) != SCHEMA_VERSION:
            raise RunInUseError(
                f"run {self.dir} has store schema {row['value']}, this evalign reads {SCHEMA_VERSION}; "
                "use a new output_dir"
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction; nested uses join the outer one."""
        if self._in_tx:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_tx = False

    # ------------------------------------------------------------------ meta, config

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row["value"]

    def save_config(self, yaml_text: str, versions: dict[str, str]) -> None:
        atomic_write_text(self.dir / "config.yaml", yaml_text)
        with self.transaction():
            self.set_meta("config", yaml_text)
            self.set_meta("versions", json.dumps(versions, sort_keys=True))

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    def checkpoint_record(self, path: str | os.PathLike[str]) -> str:
        """How a checkpoint of this run is recorded: relative to the run directory
        (``checkpoints/<name>``), so a moved or copied run finds its own."""
        return f"checkpoints/{Path(path).name}"

    def checkpoint_path(self, recorded: str) -> Path:
        """Where a recorded checkpoint of this run is now. Records made before paths were
        relative hold the absolute or cwd-relative path of the run that wrote them (which may
        since have moved, or be the original of a copied run): any ``.../checkpoints/<name>``
        is looked up in this run's own ``checkpoints/``."""
        p = Path(recorded)
        if p.parent.name == "checkpoints":
            return self.checkpoints_dir / p.name
        return p if p.is_absolute() else self.dir / p

    # ------------------------------------------------------------------ stages

    def stage_outputs(self, key: str) -> dict[str, Any] | None:
        """The outputs of a finished stage, or None if it has not finished."""
        row = self.db.execute("SELECT status, outputs FROM stages WHERE key=?", (key,)).fetchone()
        if row is None or row["status"] != "done":
            return None
        return json.loads(row["outputs"] or "{}")

    def begin_stage(self, key: str, name: str, arm: str | None, iteration: int | None) -> None:
        """Open a stage attempt. An earlier attempt that died keeps what it counted (calls it
        committed, seconds up to its last commit); a finished stage run again starts afresh."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO stages(key, name, arm, iteration, status, started_at) VALUES (?,?,?,?, 'running', ?) "
                "ON CONFLICT(key) DO UPDATE SET status='running', started_at=excluded.started_at, "
                "calls=CASE WHEN status='done' THEN 0 ELSE calls END, "
                "spent=CASE WHEN status='done' THEN 0 ELSE spent END",
                (key, name, arm, iteration, time.time()),
            )
            prior = self.db.execute("SELECT spent FROM stages WHERE key=?", (key,)).fetchone()["spent"]
        self._stage = _OpenStage(key, time.time(), float(prior or 0.0))

    def finish_stage(self, key: str, outputs: dict[str, Any], seconds: float) -> tuple[float, int]:
        """Mark a stage done; call inside the transaction that writes its last rows. Returns the
        stage's seconds and calls over every attempt (``seconds`` is this attempt's); outputs
        record both as ``_seconds`` and ``_calls``."""
        open_ = self._stage if self._stage is not None and self._stage.key == key else None
        total = seconds + (open_.prior if open_ else 0.0)
        with self.transaction():
            calls = int(self.db.execute("SELECT calls FROM stages WHERE key=?", (key,)).fetchone()["calls"] or 0)
            outputs = {**outputs, "_seconds": total, "_calls": calls}
            self.db.execute(
                "UPDATE stages SET status='done', finished_at=?, seconds=?, spent=?, outputs=? WHERE key=?",
                (time.time(), total, total, json.dumps(outputs, sort_keys=True, default=str), key),
            )
            self.note_wall()
        self._stage = None
        return total, calls

    def _note_progress(self, calls: int) -> None:
        """Inside a write transaction: what the open stage attempt has committed so far."""
        if self._stage is not None:
            st = self._stage
            self.db.execute("UPDATE stages SET calls=calls+?, spent=? WHERE key=? AND status='running'",
                            (calls, st.prior + time.time() - st.started, st.key))
        self.note_wall()

    def note_wall(self) -> None:
        """This process's time so far, so a killed process's time still counts in the run's."""
        self.set_meta(self._process, str(time.time() - self._opened))

    def wall_seconds(self) -> float:
        """Seconds every process of this run spent, each up to its last commit."""
        rows = self.db.execute("SELECT value FROM meta WHERE key LIKE 'wall:%'").fetchall()
        return sum(float(r["value"]) for r in rows)

    def stages(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM stages ORDER BY started_at").fetchall()

    # ------------------------------------------------------------------ prompts and lineage

    def add_prompts(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert prompts (idempotent by ``uid``) and return their ids in order."""
        cols = (
            "uid", "text", "text_sha", "origin", "source", "category", "parent_id", "root_id",
            "iteration", "operator", "mutation", "depth", "creator_model", "template_hash", "seed",
            "stage_key", "raw",
        )
        with self.transaction():
            for r in rows:
                vals = {c: r.get(c) for c in cols}
                vals["text_sha"] = vals["text_sha"] or sha(r["text"])
                vals["iteration"] = vals["iteration"] or 0
                vals["depth"] = vals["depth"] or 0
                self.db.execute(
                    f"INSERT OR IGNORE INTO prompts({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [vals[c] for c in cols],
                )
            ids = []
            for r in rows:
                row = self.db.execute("SELECT id FROM prompts WHERE uid=?", (r["uid"],)).fetchone()
                ids.append(int(row["id"]))
            # Seeds are their own roots.
            self.db.execute("UPDATE prompts SET root_id=id WHERE root_id IS NULL AND origin='seed'")
        return ids

    def prompts(self, ids: Iterable[int]) -> list[sqlite3.Row]:
        ids = list(ids)
        if not ids:
            return []
        rows = {}
        for chunk in _chunks(ids, 900):
            q = f"SELECT * FROM prompts WHERE id IN ({','.join('?' * len(chunk))})"
            rows.update({r["id"]: r for r in self.db.execute(q, chunk)})
        return [rows[i] for i in ids]

    def lineage(self, prompt_id: int) -> list[sqlite3.Row]:
        """The chain from a prompt back to its seed (the prompt first)."""
        chain = []
        current: int | None = prompt_id
        while current is not None:
            row = self.db.execute("SELECT * FROM prompts WHERE id=?", (current,)).fetchone()
            if row is None:
                break
            chain.append(row)
            current = row["parent_id"]
        return chain

    def add_prompt_events(self, stage_key: str, event: str, items: Iterable[tuple[int, float | None, str | None]]) -> None:
        """Per prompt (id, value, detail) of one ``event`` (reward_gap, informativeness, sampled,
        filter), stored in the ``kind`` column."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO prompt_events(stage_key, prompt_id, kind, value, detail) VALUES (?,?,?,?,?)",
                [(stage_key, pid, event, value, detail) for pid, value, detail in items],
            )

    # ------------------------------------------------------------------ unit caches

    def cached(self, table: str, keys: Sequence[str]) -> dict[str, sqlite3.Row]:
        assert table in ("generations", "rewards", "judgments")
        out: dict[str, sqlite3.Row] = {}
        for chunk in _chunks(list(dict.fromkeys(keys)), 900):
            q = f"SELECT * FROM {table} WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({r["key"]: r for r in self.db.execute(q, chunk)})
        return out

    def put(self, table: str, rows: Sequence[dict[str, Any]], *, calls: bool = True) -> None:
        """Insert cache rows in one transaction (existing keys are kept: first write wins). Each
        new row counts as one model call of the open stage unless ``calls`` is False (rows
        derived from calls counted elsewhere, such as rewards read off stored judgments)."""
        assert table in ("generations", "rewards", "judgments")
        if not rows:
            return
        now = time.time()
        cols = sorted(set(rows[0]) | {"created_at"})
        with self.transaction():
            before = self.db.total_changes
            self.db.executemany(
                f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [[r.get(c, now) if c == "created_at" else r.get(c) for c in cols] for r in rows],
            )
            self._note_progress(self.db.total_changes - before if calls else 0)
        faults.point(f"commit:{table}")

    # ------------------------------------------------------------------ pairs and metrics

    def put_pairs(self, stage_key: str, pairs: Sequence[dict[str, Any]]) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM pairs WHERE stage_key=?", (stage_key,))
            self.db.executemany(
                "INSERT INTO pairs(stage_key, prompt_id, source, chosen, rejected, chosen_score, rejected_score, "
                "chosen_win_prob, rejected_win_prob) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (stage_key, p["prompt_id"], p["source"], p["chosen"], p["rejected"],
                     p.get("chosen_score"), p.get("rejected_score"), p.get("chosen_win_prob"),
                     p.get("rejected_win_prob"))
                    for p in pairs
                ],
            )

    def pairs(self, stage_key: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT p.*, q.text AS prompt FROM pairs p JOIN prompts q ON q.id=p.prompt_id "
            "WHERE p.stage_key=? ORDER BY p.prompt_id",
            (stage_key,),
        ).fetchall()

    def put_rollouts(self, stage_key: str, rollouts: Sequence[dict[str, Any]]) -> None:
        """An online phase's rollouts (prompt_id, step, index, text, reward), replacing any an
        earlier attempt of the same stage wrote."""
        with self.transaction():
            self.db.execute("DELETE FROM rollouts WHERE stage_key=?", (stage_key,))
            self.db.executemany(
                "INSERT INTO rollouts(stage_key, prompt_id, step, sample_index, text, reward) VALUES (?,?,?,?,?,?)",
                [(stage_key, r["prompt_id"], r["step"], r["index"], r["text"], r["reward"]) for r in rollouts],
            )

    def rollouts(self, stage_key: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM rollouts WHERE stage_key=? ORDER BY prompt_id, step, sample_index", (stage_key,)
        ).fetchall()

    def put_metric(
        self, stage_key: str, arm: str | None, name: str, value: float | None,
        ci_low: float | None = None, ci_high: float | None = None, n: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO metrics(stage_key, arm, name, value, ci_low, ci_high, n, detail) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (stage_key, arm, name, value, ci_low, ci_high, n, json.dumps(detail or {}, default=str)),
            )

    def metric(self, stage_key: str | None, name: str) -> dict[str, Any] | None:
        """The detail of one stored metric (outcomes, scores, lengths ...), or None."""
        if not stage_key:
            return None
        row = self.db.execute("SELECT * FROM metrics WHERE stage_key=? AND name=?", (stage_key, name)).fetchone()
        return None if row is None else json.loads(row["detail"] or "{}")

    # ------------------------------------------------------------------ reads for the report

    def reward_gaps(self) -> list[sqlite3.Row]:
        """Every recorded reward gap with its prompt's origin and operator."""
        return self.db.execute(
            "SELECT p.origin, p.operator, e.value FROM prompt_events e JOIN prompts p ON p.id=e.prompt_id "
            "WHERE e.kind='reward_gap' AND e.value IS NOT NULL"
        ).fetchall()

    def scored_texts(self, limit: int) -> list[tuple[str, float]]:
        """(generated text, reward) of up to ``limit`` generations whose text has a reward."""
        scores = {r["response_sha"]: r["score"] for r in self.db.execute(
            "SELECT response_sha, score FROM rewards WHERE score IS NOT NULL LIMIT ?", (limit,))}
        out = []
        for r in self.db.execute("SELECT text FROM generations ORDER BY rowid"):
            s = scores.get(sha(r["text"]))
            if s is not None:
                out.append((r["text"], s))
                if len(out) >= limit:
                    break
        return out

    def evolved_operators(self) -> list[str]:
        """The operators that made evolved prompts in this run."""
        return [r["operator"] for r in self.db.execute(
            "SELECT DISTINCT operator FROM prompts WHERE origin='evolved' AND operator IS NOT NULL")]

    def kept_leaves(self, operator: str, limit: int) -> list[int]:
        """Ids of the deepest prompts of ``operator`` that the filter kept (deepest first)."""
        return [r["id"] for r in self.db.execute(
            "SELECT p.id FROM prompts p JOIN prompt_events f ON f.prompt_id=p.id AND f.kind='filter' "
            "WHERE p.operator=? AND f.value=1 ORDER BY p.depth DESC, p.id LIMIT ?", (operator, limit))]

    def contents(self) -> dict[str, list[tuple]]:
        """What the run computed, each table sorted, without timestamps or row ids: equal for a
        killed-and-resumed run and an uninterrupted one (tools/fault_inject.py compares them)."""
        queries = {
            "prompts": "SELECT uid, text, origin, depth, operator, mutation, template_hash FROM prompts",
            "prompt_events": "SELECT p.uid, e.kind, round(coalesce(e.value, -1), 9), e.detail FROM prompt_events e "
                             "JOIN prompts p ON p.id = e.prompt_id",
            "generations": "SELECT key, text FROM generations",
            "rewards": "SELECT key, round(score, 9) FROM rewards",
            "pairs": "SELECT stage_key, source, chosen, rejected FROM pairs",
            "rollouts": "SELECT r.stage_key, p.uid, r.step, r.sample_index, r.text, round(r.reward, 9) FROM rollouts r "
                        "JOIN prompts p ON p.id = r.prompt_id",
            "judgments": "SELECT key, round(coalesce(prob_a, score), 9), parse_failed FROM judgments",
            "metrics": "SELECT stage_key, name, round(value, 9), n FROM metrics",
            "stages": "SELECT key, name FROM stages WHERE status = 'done'",
        }
        return {name: sorted(tuple(r) for r in self.db.execute(q)) for name, q in queries.items()}


@dataclass
class _OpenStage:
    key: str
    started: float  # this attempt's start (time.time())
    prior: float  # seconds earlier attempts spent


_LEGACY_CHECKPOINT_TMP = re.compile(r"\.[0-9a-f]{16}\.(launch|[a-z0-9_]{8})\.tmp")


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
