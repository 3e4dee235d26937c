"""Prompt sources and their bad inputs: one clear line naming the file, the line and the fix."""

from __future__ import annotations

import json
import logging

import pytest

from evalign.config import PromptsConfig
from evalign.errors import InputError
from evalign.prompts import load_prompts, read_prompt_source


def jsonl(tmp_path, rows, name="p.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def test_builtin_seed_set_is_large_diverse_and_clean():
    records = read_prompt_source("builtin:seed")
    assert len(records) >= 300
    cats = {r.category for r in records}
    assert {"writing", "reasoning", "math", "coding", "knowledge", "instruction_following"} <= cats
    assert len({r.text.lower() for r in records}) == len(records)


def test_builtin_sets_do_not_overlap_eval_prompts():
    from evalign.creator.filters import similarity
    from evalign.eval.sets import load_mt_questions, load_winrate_prompts

    seeds = [r.text for r in read_prompt_source("builtin:seed")]
    evals = [p.prompt for p in load_winrate_prompts("builtin:eval")]
    evals += [t for q in load_mt_questions("builtin:mt") for t in q.turns]
    assert len(load_winrate_prompts("builtin:eval")) >= 80 and len(load_mt_questions("builtin:mt")) >= 40
    worst = max(similarity(s, e) for s in seeds for e in evals)
    assert worst < 0.5


def test_jsonl_csv_and_chat_format(tmp_path):
    p = jsonl(tmp_path, [{"instruction": "Say hi."}, {"instruction": [{"role": "user", "content": "Say bye."}]}])
    assert [r.text for r in read_prompt_source(str(p), "instruction")] == ["Say hi.", "Say bye."]
    c = tmp_path / "p.csv"
    c.write_text("prompt,category\n\"Hello, world?\",writing\nWhat is 2+2?,math\n", encoding="utf-8")
    rows = read_prompt_source(str(c))
    assert [r.text for r in rows] == ["Hello, world?", "What is 2+2?"] and rows[1].category == "math"


def test_hf_loader_reads_a_local_dataset_of_ultrafeedback_shape(tmp_path):
    import datasets

    ds = datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list([
        {"prompt": "How do plants make food?", "chosen": [], "rejected": []},
        {"prompt": "Name a prime number.", "chosen": [], "rejected": []},
    ])})
    ds.save_to_disk(tmp_path / "uf")
    rows = read_prompt_source(f"hf:{tmp_path / 'uf'}:train_prefs", "prompt")
    assert [r.text for r in rows] == ["How do plants make food?", "Name a prime number."]
    with pytest.raises(InputError, match="no column 'instruction'"):
        read_prompt_source(f"hf:{tmp_path / 'uf'}:train_prefs", "instruction")


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", r"the file is empty; add one prompt per line"),
        (b'{"prompt": "ok"}\n{"text": "no prompt key"}\n', r"line 2: missing field 'prompt'; set prompts.field"),
        (b'{"prompt": "ok"}\n{"prompt": "bad \xff byte"}\n', r"line 2: invalid UTF-8 at byte \d+; re-save the file as UTF-8"),
        (b'{"prompt": "ok"}\n{not json}\n', r"line 2: invalid JSON"),
        (b'{"prompt": ""}\n', r"line 1: field 'prompt' must be a non-empty string"),
    ],
)
def test_bad_prompt_files_name_file_line_and_fix(tmp_path, content, expected):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(InputError, match=expected) as e:
        load_prompts(PromptsConfig(source=str(p)))
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found; give builtin:seed, a .jsonl/.csv file, or hf:"):
        load_prompts(PromptsConfig(source=str(tmp_path / "nope.jsonl")))


def test_duplicates_are_dropped_with_their_lines(tmp_path, caplog):
    p = jsonl(tmp_path, [{"prompt": "Same."}, {"prompt": "Other."}, {"prompt": "  same. "}])
    with caplog.at_level(logging.WARNING, logger="evalign"):
        rows = load_prompts(PromptsConfig(source=str(p), shuffle=False))
    assert [r.text for r in rows] == ["Same.", "Other."]
    assert "dropped 1 duplicate prompts (lines 3 (= 1))" in caplog.text


def test_oversized_prompts_are_skipped_truncated_or_refused(tmp_path, caplog):
    p = jsonl(tmp_path, [{"prompt": "short one"}, {"prompt": "x" * 100}, {"prompt": "another short"}])
    with caplog.at_level(logging.WARNING, logger="evalign"):
        skipped = load_prompts(PromptsConfig(source=str(p), max_chars=50, oversized="skip", shuffle=False))
    assert [r.text for r in skipped] == ["short one", "another short"]
    assert "skipped 1 prompts longer than 50 characters (lines 2)" in caplog.text
    cut = load_prompts(PromptsConfig(source=str(p), max_chars=50, oversized="truncate", shuffle=False))
    assert len(cut[1].text) == 50
    with pytest.raises(InputError, match=r"1 prompts longer than prompts.max_chars=50 \(lines 2\); raise max_chars"):
        load_prompts(PromptsConfig(source=str(p), max_chars=50, oversized="error"))


def test_shuffle_and_limit_are_seeded(tmp_path):
    p = jsonl(tmp_path, [{"prompt": f"Prompt {i}"} for i in range(20)])
    a = load_prompts(PromptsConfig(source=str(p), limit=5), seed=1)
    b = load_prompts(PromptsConfig(source=str(p), limit=5), seed=1)
    c = load_prompts(PromptsConfig(source=str(p), limit=5), seed=2)
    assert [r.text for r in a] == [r.text for r in b] != [r.text for r in c]
