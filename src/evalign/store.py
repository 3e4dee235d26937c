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
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from evalign import faults
from evalign.hashing import key_of, sha  # noqa: F401  (re-exported: callers take keys from the store)
from evalign.errors import RunInUseError
from evalign.fsutil import atomic_write_text, remove_stale_temporaries

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stages (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    arm TEXT,
    iteration INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')),
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    outputs TEXT
);
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY,
    uid TEXT UNIQUE NOT NULL,
    text TEXT NOT NULL,
    text_sha TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('seed', 'evolved')),
    source TEXT,
    category TEXT,
    parent_id INTEGER REFERENCES prompts(id),
    root_id INTEGER REFERENCES prompts(id),
    iteration INTEGER NOT NULL DEFAULT 0,
    operator TEXT,
    mutation TEXT,
    depth INTEGER NOT NULL DEFAULT 0,
    creator_model TEXT,
    template_hash TEXT,
    seed INTEGER,
    stage_key TEXT,
    raw TEXT
);
CREATE INDEX IF NOT EXISTS prompts_parent ON prompts(parent_id);
CREATE INDEX IF NOT EXISTS prompts_stage ON prompts(stage_key);
CREATE TABLE IF NOT EXISTS prompt_events (
    stage_key TEXT NOT NULL,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    kind TEXT NOT NULL,
    value REAL,
    detail TEXT,
    PRIMARY KEY (stage_key, prompt_id, kind)
);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    prompt_sha TEXT NOT NULL,
    params_sha TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    finish_reason TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS rewards (
    key TEXT PRIMARY KEY,
    reward_id TEXT NOT NULL,
    prompt_sha TEXT NOT NULL,
    response_sha TEXT NOT NULL,
    score REAL,
    detail TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS pairs (
    stage_key TEXT NOT NULL,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    source TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    chosen_score REAL,
    rejected_score REAL,
    PRIMARY KEY (stage_key, prompt_id)
);
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY,
    judge_id TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    question_sha TEXT NOT NULL,
    answer_a_sha TEXT NOT NULL,
    answer_b_sha TEXT,
    verdict TEXT,
    prob_a REAL,
    score REAL,
    raw TEXT,
    attempts INTEGER,
    parse_failed INTEGER NOT NULL DEFAULT 0,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    stage_key TEXT NOT NULL,
    arm TEXT,
    name TEXT NOT NULL,
    value REAL,
    ci_low REAL,
    ci_high REAL,
    n INTEGER,
    detail TEXT,
    PRIMARY KEY (stage_key, name)
);
"""


class RunStore:
    """One run directory. Open it with ``RunStore(path)``; use as a context manager."""

    def __init__(self, run_dir: str | os.PathLike[str], *, lock: bool = True, readonly: bool = False) -> None:
        self.dir = Path(run_dir)
        self.readonly = readonly
        self._in_tx = False
        if readonly:
            if not (self.dir / "run.db").is_file():
                raise FileNotFoundError(f"{self.dir} is not an evalign run directory (no run.db)")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = None
        if lock and not readonly:
            self._acquire_lock()
            remove_stale_temporaries(self.dir)
        uri = f"file:{self.dir / 'run.db'}" + ("?mode=ro" if readonly else "")
        self.db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
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

    # ------------------------------------------------------------------ stages

    def stage_outputs(self, key: str) -> dict[str, Any] | None:
        """The outputs of a finished stage, or None if it has not finished."""
        row = self.db.execute("SELECT status, outputs FROM stages WHERE key=?", (key,)).fetchone()
        if row is None or row["status"] != "done":
            return None
        return json.loads(row["outputs"] or "{}")

    def begin_stage(self, key: str, name: str, arm: str | None, iteration: int | None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO stages(key, name, arm, iteration, status, started_at) VALUES (?,?,?,?, 'running', ?) "
                "ON CONFLICT(key) DO UPDATE SET status='running', started_at=excluded.started_at",
                (key, name, arm, iteration, time.time()),
            )

    def finish_stage(self, key: str, outputs: dict[str, Any], seconds: float) -> None:
        """Mark a stage done; call inside the transaction that writes its last rows."""
        with self.transaction():
            self.db.execute(
                "UPDATE stages SET status='done', finished_at=?, seconds=?, outputs=? WHERE key=?",
                (time.time(), seconds, json.dumps(outputs, sort_keys=True, default=str), key),
            )

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

    def add_prompt_events(self, stage_key: str, kind: str, items: Iterable[tuple[int, float | None, str | None]]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO prompt_events(stage_key, prompt_id, kind, value, detail) VALUES (?,?,?,?,?)",
                [(stage_key, pid, kind, value, detail) for pid, value, detail in items],
            )

    def prompt_events(self, stage_key: str, kind: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM prompt_events WHERE stage_key=? AND kind=? ORDER BY prompt_id", (stage_key, kind)
        ).fetchall()

    # ------------------------------------------------------------------ unit caches

    def cached(self, table: str, keys: Sequence[str]) -> dict[str, sqlite3.Row]:
        assert table in ("generations", "rewards", "judgments")
        out: dict[str, sqlite3.Row] = {}
        for chunk in _chunks(list(dict.fromkeys(keys)), 900):
            q = f"SELECT * FROM {table} WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({r["key"]: r for r in self.db.execute(q, chunk)})
        return out

    def put(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert cache rows in one transaction (existing keys are kept: first write wins)."""
        assert table in ("generations", "rewards", "judgments")
        if not rows:
            return
        now = time.time()
        cols = sorted(set(rows[0]) | {"created_at"})
        with self.transaction():
            self.db.executemany(
                f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [[r.get(c, now) if c == "created_at" else r.get(c) for c in cols] for r in rows],
            )
        faults.point(f"commit:{table}")

    # ------------------------------------------------------------------ pairs and metrics

    def put_pairs(self, stage_key: str, pairs: Sequence[dict[str, Any]]) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM pairs WHERE stage_key=?", (stage_key,))
            self.db.executemany(
                "INSERT INTO pairs(stage_key, prompt_id, source, chosen, rejected, chosen_score, rejected_score) "
                "VALUES (?,?,?,?,?,?,?)",
                [
                    (stage_key, p["prompt_id"], p["source"], p["chosen"], p["rejected"],
                     p.get("chosen_score"), p.get("rejected_score"))
                    for p in pairs
                ],
            )

    def pairs(self, stage_key: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT p.*, q.text AS prompt FROM pairs p JOIN prompts q ON q.id=p.prompt_id "
            "WHERE p.stage_key=? ORDER BY p.prompt_id",
            (stage_key,),
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

    def metrics(self, arm: str | None = None) -> list[sqlite3.Row]:
        if arm is None:
            return self.db.execute("SELECT * FROM metrics ORDER BY arm, name").fetchall()
        return self.db.execute("SELECT * FROM metrics WHERE arm=? ORDER BY name", (arm,)).fetchall()

    def counts(self) -> dict[str, int]:
        """Row counts per table (for summaries and kill/resume checks)."""
        tables = ("stages", "prompts", "prompt_events", "generations", "rewards", "pairs", "judgments", "metrics")
        return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
