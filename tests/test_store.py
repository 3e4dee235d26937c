from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalign.errors import RunInUseError
from evalign.store import SCHEMA_VERSION, RunStore, key_of, sha


def test_schema_is_plain_sqlite_with_wal(tmp_path):
    with RunStore(tmp_path / "run"):
        pass
    db = sqlite3.connect(tmp_path / "run" / "run.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"prompts", "generations", "rewards", "pairs", "judgments", "metrics", "stages"} <= tables


def test_prompts_are_idempotent_and_lineage_walks_to_the_seed(tmp_path):
    with RunStore(tmp_path) as s:
        [seed] = s.add_prompts([{"uid": "seed:1", "text": "Write a poem.", "origin": "seed"}])
        [a] = s.add_prompts([{"uid": "e:1", "text": "Write a sonnet.", "origin": "evolved", "parent_id": seed,
                              "root_id": seed, "depth": 1, "operator": "evol_instruct", "mutation": "deepen"}])
        [b] = s.add_prompts([{"uid": "e:2", "text": "Write a sonnet on rain.", "origin": "evolved", "parent_id": a,
                              "root_id": seed, "depth": 2, "operator": "evol_instruct", "mutation": "concretize"}])
        assert s.add_prompts([{"uid": "e:2", "text": "ignored", "origin": "evolved"}]) == [b]
        chain = s.lineage(b)
        assert [r["id"] for r in chain] == [b, a, seed]
        assert s.prompts([seed])[0]["root_id"] == seed
        assert chain[0]["mutation"] == "concretize"


def test_cache_put_keeps_the_first_write_and_transactions_roll_back(tmp_path):
    with RunStore(tmp_path) as s:
        row = {"key": "k1", "model_id": "m", "prompt_sha": "p", "params_sha": "x", "sample_index": 0, "seed": 1,
               "text": "first", "prompt_tokens": 1, "completion_tokens": 1, "finish_reason": "stop"}
        s.put("generations", [row])
        s.put("generations", [{**row, "text": "second"}])
        assert s.cached("generations", ["k1", "missing"])["k1"]["text"] == "first"
        with pytest.raises(RuntimeError):
            with s.transaction():
                s.put("generations", [{**row, "key": "k2"}])
                raise RuntimeError("killed mid-transaction")
        assert "k2" not in s.cached("generations", ["k2"])


def test_stage_is_done_only_after_finish(tmp_path):
    with RunStore(tmp_path) as s:
        s.begin_stage("st", "generate", "eva", 1)
        assert s.stage_outputs("st") is None
        s.finish_stage("st", {"n": 3}, 1.5)
        assert s.stage_outputs("st") == {"n": 3, "_seconds": 1.5, "_calls": 0}
    with RunStore(tmp_path) as s:  # survives reopening
        assert s.stage_outputs("st") == {"n": 3, "_seconds": 1.5, "_calls": 0}


def _gen_rows(keys):
    return [{"key": k, "model_id": "m", "prompt_sha": "c", "params_sha": "p", "sample_index": 0, "seed": 0, "text": k} for k in keys]


def test_a_stage_counts_the_calls_and_time_of_attempts_a_kill_ended(tmp_path):
    with RunStore(tmp_path) as s:  # the first attempt commits 3 generations, then its process dies
        s.begin_stage("st", "generate", "eva", 1)
        s.put("generations", _gen_rows(["a", "b", "c"]))
        s.put("rewards", [{"key": "r", "reward_id": "j", "prompt_sha": "p", "response_sha": "q", "score": 1.0}],
              calls=False)  # read off stored judgments: not a call of its own
    time.sleep(0.05)
    with RunStore(tmp_path) as s:  # the resumed attempt finds them cached and computes 2 more
        s.begin_stage("st", "generate", "eva", 1)
        s.put("generations", _gen_rows(["a", "d", "e"]))  # "a" is already stored: not a new call
        seconds, calls = s.finish_stage("st", {"n": 5}, 0.25)
        assert calls == 5 and seconds > 0.25  # the first attempt's time up to its last commit counts
        assert s.stage_outputs("st")["_calls"] == 5
        assert s.wall_seconds() > 0 and s.db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'wall:%'").fetchone()[0] == 2
        s.begin_stage("st", "generate", "eva", 1)  # a finished stage run again (stale) starts afresh
        assert s.finish_stage("st", {}, 0.1) == (pytest.approx(0.1), 0)


def test_a_run_from_before_stage_accounting_opens_and_gains_the_columns(tmp_path):
    import sqlite3 as sq

    with RunStore(tmp_path) as s:
        s.begin_stage("st", "generate", "eva", 1)
    db = sq.connect(tmp_path / "run.db")
    db.execute("ALTER TABLE stages DROP COLUMN calls")
    db.execute("ALTER TABLE stages DROP COLUMN spent")
    db.commit()
    db.close()
    with RunStore(tmp_path) as s:
        s.begin_stage("st", "generate", "eva", 1)
        assert s.finish_stage("st", {}, 1.0) == (1.0, 0)


def test_a_second_process_gets_a_one_line_in_use_error(tmp_path):
    with RunStore(tmp_path):
        code = (
            "import sys\nfrom evalign.store import RunStore\nfrom evalign.errors import RunInUseError\n"
            f"try:\n    RunStore({str(tmp_path)!r})\nexcept RunInUseError as e:\n    print(e); sys.exit(3)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert "is in use by PID" in out.stdout and out.stdout.count("\n") == 1
    with RunStore(tmp_path):  # released once the holder closes
        pass


def test_same_process_cannot_open_a_locked_run_twice(tmp_path):
    with RunStore(tmp_path):
        with pytest.raises(RunInUseError):
            RunStore(tmp_path)


def test_keys_are_stable():
    assert key_of("gen", "m", 1) == key_of("gen", "m", 1)
    assert key_of("gen", "m", 1) != key_of("gen", "m", 2)
    assert sha("x") == sha("x") and len(sha("x")) == 24


def test_cache_through_computes_only_missing_items_and_commits_each_chunk(tmp_path):
    from evalign.store import cache_through

    def row(i, j, v):
        return {"reward_id": "r", "prompt_sha": str(i), "response_sha": str(j), "score": v}

    keys = [[f"k{i}-{j}" for j in range(2)] for i in range(5)]
    with RunStore(tmp_path) as s:
        s.put("rewards", [{"key": "k1-0", **row(1, 0, -1.0)}])  # one value of item 1 is cached
        asked, commits = [], []
        real_put = s.put
        s.put = lambda table, rows, **kw: (commits.append(len(rows)), real_put(table, rows, **kw))
        values, new = cache_through(s, "rewards", keys, lambda items: (asked.append(items), [[10.0 * i + j for j in range(2)] for i in items])[1],
                                    row, lambda r: r["score"], chunk=2)
        assert values[1] == [-1.0, 11.0] and values[4] == [40.0, 41.0]
        assert new == 9 and asked == [[0, 1], [2, 3], [4]] and commits == [3, 4, 2]
        asked.clear()
        again, new = cache_through(s, "rewards", keys, lambda items: asked.append(items), row, lambda r: r["score"])
        assert again == values and new == 0 and asked == []
    values, new = cache_through(None, "rewards", keys, lambda items: [[1.0, 2.0] for _ in items], row,
                                lambda r: r["score"], chunk=None)
    assert new == 10 and values[3] == [1.0, 2.0]


def test_opening_a_run_in_a_users_folder_removes_only_evalign_temporaries(tmp_path):
    from evalign.fsutil import atomic_dir, atomic_writer

    user = {"notes.tmp": "mine", ".notes.tmp": "mine too", "data/x.tmp": "keep", "data/.x.tmp": "keep",
            "checkpoints/.mine.tmp": "keep", "report/.draft.tmp": "keep"}
    for name, text in user.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "data" / ".folder.tmp").mkdir()
    # Writes a kill interrupted: a temporary file and a temporary checkpoint directory.
    with atomic_writer(tmp_path / "config.yaml") as fh:
        fh.write(b"half")
        [left_file] = [p for p in tmp_path.iterdir() if "config.yaml" in p.name]
    left_file.write_bytes(b"half")  # as if a kill had come before the rename
    left_dir = tmp_path / "checkpoints" / ".evalign-tmp-0123456789abcdef.abcd1234"
    left_dir.mkdir(parents=True)
    (left_dir / "model.safetensors").write_bytes(b"x")
    legacy = tmp_path / "checkpoints" / ".0123456789abcdef.k2j_3x9q.tmp"  # named by older versions
    legacy.mkdir()
    with RunStore(tmp_path):
        pass
    for name, text in user.items():
        assert (tmp_path / name).read_text() == text, name
    assert (tmp_path / "data" / ".folder.tmp").is_dir()
    assert left_file.name.startswith(".evalign-tmp-") and not left_file.exists()
    assert not left_dir.exists() and not legacy.exists()
    with atomic_dir(tmp_path / "d") as tmp:
        assert tmp.name.startswith(".evalign-tmp-d.")


@pytest.mark.parametrize("name", ["shared?a", "shared#b", "100%41", "with space", "ünï€ode", "a?b#c%20d"])
def test_any_character_in_the_run_path_keeps_run_db_inside_it(tmp_path, name):
    run = tmp_path / "runs" / name
    with RunStore(run) as s, s.transaction():
        s.set_meta("who", name)
    assert (run / "run.db").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [name]  # no runs/shared beside it
    with RunStore(run, readonly=True) as s:
        assert s.get_meta("who") == name
    assert sqlite3.connect(run / "run.db").execute("SELECT value FROM meta WHERE key='who'").fetchone()[0] == name


def test_two_runs_differing_after_a_question_mark_do_not_share_a_database(tmp_path):
    with RunStore(tmp_path / "shared?a") as a, RunStore(tmp_path / "shared?b") as b:
        with a.transaction():
            a.set_meta("who", "a")
        with b.transaction():
            b.set_meta("who", "b")
        assert a.get_meta("who") == "a" and b.get_meta("who") == "b"
    assert not (tmp_path / "shared").exists()


def test_checkpoints_are_recorded_relative_and_old_records_resolve_to_this_run(tmp_path, monkeypatch):
    with RunStore(tmp_path / "now") as s:
        rec = s.checkpoint_record(s.checkpoints_dir / "0123456789abcdef")
        assert rec == "checkpoints/0123456789abcdef"
        assert s.checkpoint_path(rec) == tmp_path / "now" / "checkpoints" / "0123456789abcdef"
        # absolute and cwd-relative records of older versions (this run before a move, or a copy's original)
        for old in ("/elsewhere/before/checkpoints/0123456789abcdef", "runs/before/checkpoints/0123456789abcdef"):
            assert s.checkpoint_path(old) == tmp_path / "now" / "checkpoints" / "0123456789abcdef"
        assert s.checkpoint_path("/models/base") == Path("/models/base")  # not a checkpoint of a run
