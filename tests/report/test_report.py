"""The report's plots and HTML page, from a synthetic ``results`` dict (no run store, no
models), plus a headless-Chromium check that the page opens from disk and renders."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evalign.report import html, plots, tables
from report_fixture import XSS, empty_results, single_arm_results, synthetic_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = ["winrate", "score", "informativeness", "answer_length", "reward_length"]
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()), None)


def _build(results, out: Path) -> tuple[list[Path], str, Path]:
    pngs = plots.make_plots(results, out)
    page = html.render(results, pngs, tables.markdown(results))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return pngs, page, path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = synthetic_results()
    pngs, page, path = _build(results, out)
    return results, pngs, page, path


def _data_uris(page: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_plots_written_in_fixed_order_and_valid(built):
    _, pngs, _, _ = built
    assert [p.name for p in pngs] == [f"{n}.png" for n in EXPECTED]
    assert [n for n, _ in plots.PLOTS] == EXPECTED
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC, p
        assert len(data) > 1024, p


def test_plots_are_deterministic(built, tmp_path):
    results, pngs, _, _ = built
    again = plots.make_plots(results, tmp_path)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in pngs]


def test_html_table_plots_and_escaping(built):
    results, _, page, _ = built
    table = re.search(r'<table id="results">(.*?)</table>', page, re.S)
    assert table, "no results table"
    body = re.search(r"<tbody>(.*?)</tbody>", table.group(1), re.S).group(1)
    assert len(re.findall(r"<tr[ >]", body)) == len(results["rows"])
    for row in results["rows"]:
        assert f'data-arm="{row["arm"]}"' in body
    assert 'data-arm="eva" class="default"' in body
    header = re.search(r"<thead>(.*?)</thead>", table.group(1), re.S).group(1)
    assert header.count("<th") == len(tables.COLUMNS)
    # the un-evaluated arm renders with placeholders, the evaluated ones with their numbers
    simpo = re.search(r'<tr data-arm="eva-simpo">(.*?)</tr>', body, re.S).group(1)
    assert simpo.count("—") >= 8
    assert "60.0 [55.0, 65.0]" in body

    for name in EXPECTED:
        fig = re.search(rf'<figure class="plot" data-name="{name}">(.*?)</figure>', page, re.S)
        assert fig, name
        assert re.search(r'<img src="data:image/png;base64,[^"]+" alt="[^"]+">', fig.group(1)), name
        assert "<figcaption>" in fig.group(1)
    uris = _data_uris(page)
    assert len(uris) == len(EXPECTED)
    for b64 in uris:  # every embedded image decodes as a PNG
        from PIL import Image

        raw = base64.b64decode(b64, validate=True)
        assert raw[:8] == PNG_MAGIC
        img = Image.open(io.BytesIO(raw))
        img.load()
        assert img.width > 300 and img.height > 200

    # self-contained: no remote (or any non-data) resource references, no scripts
    refs = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', page, re.I)
    assert refs and all(r.startswith("data:") for r in refs), refs
    assert not re.search(r'(?:src|href)\s*=\s*["\']?\s*https?://', page, re.I)
    assert "<script" not in page.lower()
    assert "@import" not in page and "url(" not in page
    # untrusted texts are escaped
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>three</b>" not in page and "&lt;b&gt;three&lt;/b&gt;" in page
    assert "/runs/study-2024-11 &lt;b&gt;x&lt;/b&gt;" in page


def test_html_sections(built):
    results, _, page, _ = built
    for sid in ("results-section", "judge", "plots", "sharing", "lineage", "categories", "stages", "provenance"):
        assert f'<section id="{sid}">' in page, sid
    # judge block and the table notes come from tables.py
    assert html.esc(tables.judge_block(results["judge_validity"])) in page
    assert "paired bootstrap against the eva default arm" in page
    # lineage: seed first, newest last, with depth and mutation
    ol = re.search(r'<ol class="lineage" data-operator="evol_instruct">(.*?)</ol>', page, re.S).group(1)
    items = re.findall(r"<li>(.*?)</li>", ol, re.S)
    assert len(items) == 3
    assert "depth 0" in items[0] and "seed" in items[0] and "How do plants make food?" in items[0]
    assert "depth 2" in items[2] and "mutation concretize" in items[2]
    # per-category table: one row per evaluated arm, one column per category
    cats = re.search(r'<table id="categories">(.*?)</table>', page, re.S).group(1)
    assert cats.count("<tr") == 1 + sum(1 for r in results["rows"] if r["per_category"])
    assert "humanities" in cats
    stages = re.search(r'<table id="stages">(.*?)</table>', page, re.S).group(1)
    assert stages.count("<tr") == 1 + len(results["stages"]) + 1  # header, uses, total
    assert "seconds saved" in page and "900 s" in page
    assert re.search(r"<details><summary>Resolved config</summary>\s*<pre>", page)
    assert "# &lt;not html&gt;" in page
    assert "transformers" in re.search(r'<table id="versions">(.*?)</table>', page, re.S).group(1)


@pytest.mark.parametrize("make", [empty_results, single_arm_results], ids=["empty", "single-arm"])
def test_sparse_results_render(make, tmp_path):
    results = make()
    (tmp_path / "winrate.png").write_bytes(b"stale")  # a plot from an earlier report must go
    pngs, page, _ = _build(results, tmp_path)
    names = [p.stem for p in pngs]
    if make is empty_results:
        assert names == []
        assert not (tmp_path / "winrate.png").exists()
    else:
        assert names == ["winrate", "score", "answer_length", "reward_length"]
    for name in EXPECTED:
        if name not in names:
            assert re.search(rf'<figure class="plot missing" data-name="{name}">\s*<p class="nodata">no data for',
                             page), name
    assert len(_data_uris(page)) == len(names)
    assert '<table id="results">' in page
    assert page.count("no data for") >= 5 - len(names)


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_chromium_opens_page_from_disk(built, tmp_path):
    from PIL import Image

    results, _, page, path = built
    url = path.resolve().as_uri()
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    out = dom.stdout
    table = re.search(r'<table id="results">(.*?)</table>', out, re.S)
    assert table, out[:2000]
    for row in results["rows"]:
        assert f'<tr data-arm="{row["arm"]}"' in table.group(1)
    for name in EXPECTED:
        assert re.search(rf'<figure class="plot" data-name="{name}">\s*<img src="data:image/png;base64,', out), name
    # the browser parsed the escaped prompt as text: no script element came from the page
    assert "<script" not in out.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert _data_uris(out) == _data_uris(page)  # images reached the DOM intact

    shot = tmp_path / "shot.png"
    run = _chromium([f"--screenshot={shot}", "--window-size=1280,2400", "--virtual-time-budget=5000", url], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # not a blank page


def test_detectable_effect_uses_the_scale_of_the_outcomes(monkeypatch):
    """Log-prob outcomes are probabilities: a true difference shrinks by 2 * mean P(better) - 1,
    which for a judge right 78% of the time but only 60% sure is far smaller than 2 * 0.78 - 1."""
    from evalign.eval import judge_check as judgecheck
    from evalign.eval import stats
    from evalign.report import collect

    measured = {"accuracy": {"value": 0.78, "ci_low": 0.69, "ci_high": 0.85, "n": 96},
                "soft_accuracy": {"value": 0.60, "ci_low": 0.58, "ci_high": 0.62, "n": 96},
                "first_position_rate": 0.2, "order_agreement": 0.4, "n": 96, "source": "builtin:labeled"}
    monkeypatch.setattr(judgecheck, "find_validity", lambda *a: (measured, "run"))
    outcomes = {"eva": {"win": [0.5, 0.6, 0.4, 0.55]}, "arm": {"win": [0.6, 0.5, 0.5, 0.45]}}
    study = {"judge": {"judge_id": "j", "mode": "logprobs", "pair_version": "v", "n_winrate": 4}}
    soft = collect._judge_validity(study, outcomes, "eva")
    sd = soft["sd_paired"]
    assert soft["detectable_effect"] == pytest.approx(stats.min_detectable_effect(4, 0.60, sd=sd))
    assert soft["attenuation"] == pytest.approx(0.2)
    study["judge"]["mode"] = "generate"  # hard verdicts: accuracy is the right scale
    hard = collect._judge_validity(study, outcomes, "eva")
    assert hard["detectable_effect"] == pytest.approx(stats.min_detectable_effect(4, 0.78, sd=sd))
    assert soft["detectable_effect"] > 2 * hard["detectable_effect"]


def _validity(monkeypatch, measured, mode="logprobs"):
    from evalign.eval import judge_check as judgecheck
    from evalign.report import collect

    monkeypatch.setattr(judgecheck, "find_validity", lambda *a: (measured, "shipped"))
    outcomes = {"eva": {"win": [0.5, 0.6, 0.4, 0.55]}, "arm": {"win": [0.6, 0.5, 0.5, 0.45]}}
    study = {"judge": {"judge_id": "j", "mode": mode, "pair_version": "v", "n_winrate": 4}}
    return collect._judge_validity(study, outcomes, "eva")


def test_the_judge_validity_block_leads_with_the_subtle_pairs_and_derives_the_effect_from_them(monkeypatch):
    """Gross pairs (competent against gibberish) flatter a judge: the block quotes the subtle
    pairs' accuracy first, the detectable effect comes from their mean P(better), and the
    gross pairs appear only as a sanity check."""
    from evalign.eval import stats

    measured = {"accuracy": {"value": 0.78, "ci_low": 0.69, "ci_high": 0.85, "n": 96},
                "soft_accuracy": {"value": 0.60, "ci_low": 0.58, "ci_high": 0.62, "n": 96},
                "by_difficulty": {
                    "gross": {"accuracy": 1.0, "n": 48, "ci_low": 0.93, "ci_high": 1.0,
                              "soft_accuracy": {"value": 0.64, "ci_low": 0.62, "ci_high": 0.66, "n": 48}},
                    "subtle": {"accuracy": 0.5625, "n": 48, "ci_low": 0.42, "ci_high": 0.70,
                               "soft_accuracy": {"value": 0.53, "ci_low": 0.51, "ci_high": 0.55, "n": 48}}},
                "first_position_rate": 0.2, "order_agreement": 0.4, "n": 96, "source": "builtin:labeled"}
    jv = _validity(monkeypatch, measured)
    assert jv["resembling"] == "subtle" and jv["accuracy"]["value"] == 0.5625
    assert jv["detectable_effect"] == pytest.approx(stats.min_detectable_effect(4, 0.53, sd=jv["sd_paired"]))
    assert jv["attenuation"] == pytest.approx(0.06)
    block = tables.judge_block(jv)
    lead = block.index("on the subtle labeled pairs")
    assert "56.2 [42.0, 70.0]% (n=48), mean P(better) 53.0 [51.0, 55.0]%" in block
    assert lead < block.index("Minimum detectable") < block.index("Sanity check: on gross pairs")
    assert "100.0 [93.0, 100.0]% (n=48); all 96 pairs 78.0 [69.0, 85.0]%" in block
    assert "mean P(better) on the subtle labeled pairs" in jv["method"]
    assert _validity(monkeypatch, measured, mode="generate")["detectable_effect"] == pytest.approx(
        stats.min_detectable_effect(4, 0.5625, sd=jv["sd_paired"]))  # hard verdicts: hard accuracy


def test_a_result_stored_before_difficulty_carried_a_ci_still_reads(monkeypatch):
    """Old shipped results keep only accuracy and n per difficulty: the Wilson CI is rebuilt
    from them and the subtle hard accuracy stands in for the missing mean P(better), saying so."""
    from evalign.eval import stats

    measured = {"accuracy": {"value": 0.78, "ci_low": 0.69, "ci_high": 0.85, "n": 96},
                "soft_accuracy": {"value": 0.60, "ci_low": 0.58, "ci_high": 0.62, "n": 96},
                "by_difficulty": {"gross": {"accuracy": 1.0, "n": 48}, "subtle": {"accuracy": 0.5625, "n": 48}},
                "n": 96, "source": "builtin:labeled"}
    jv = _validity(monkeypatch, measured)
    wilson = stats.proportion_ci(27, 48)
    assert jv["accuracy"]["ci_low"] == pytest.approx(wilson.ci_low) and jv["accuracy"]["n"] == 48
    assert jv["soft_accuracy"] is None and "hard accuracy stands in" in jv["method"]
    assert jv["detectable_effect"] == pytest.approx(stats.min_detectable_effect(4, 0.5625, sd=jv["sd_paired"]))
    assert "(n=48)" in tables.judge_block(jv)
    user = dict(measured, by_difficulty={"-": {"accuracy": 0.78, "n": 96}})  # a user's set: all resemble
    jv = _validity(monkeypatch, user)
    assert jv["resembling"] == "all" and jv["accuracy"]["value"] == 0.78 and jv["gross_accuracy"] is None
    assert "Sanity check" not in tables.judge_block(jv)


def test_the_shipped_results_load_into_the_block():
    """Every result file shipped for the built-in judge reads into the block (old and new)."""
    import json

    from evalign.prompts import builtin_path
    from evalign.report.collect import _resembling

    files = sorted(builtin_path("judge_checks").glob("*.json"))
    assert files
    for f in files:
        d = json.loads(f.read_text(encoding="utf-8"))
        like = _resembling(d)
        assert like["label"] == "subtle" and 0 <= like["accuracy"]["value"] <= 1 and like["accuracy"]["n"] > 0


def test_the_study_record_reads_and_writes_the_stored_layout_unchanged():
    """Old run directories keep loading, and a rewrite stores the same JSON text."""
    import json

    from evalign.report.record import StudyRecord

    trained = {"policy_id": "ckpt:ab", "checkpoint": "/r/checkpoints/ab", "checkpoints": ["/r/checkpoints/ab"],
               "train_pairs": 12, "summary": {"iteration_1": {"pool": 8, "kept": 3, "filtered": {"empty": 1}}},
               "seconds_now": 3.5, "creator_enabled": True, "metric": "gap", "operator": "evol_instruct",
               "eval": {"win_rate_vs_theta0": "k1", "score": "k2"}, "mean_answer_chars": 41.5}
    study = {
        "arms": {"eva": {"description": "eva defaults", "set": {}, "seeds": {"0": trained}},
                 "theta0": {"description": "starting policy θ0 (no training)",
                            "seeds": {"0": {"policy_id": "hf:x", "checkpoint": "x", "eval": {"score": "k3"},
                                            "mean_answer_chars": 40.0}}}},
        "single": True, "default_arm": "eva", "baseline_arm": "no-creator",
        "judge": {"judge_id": "j", "mode": "logprobs", "pair_version": "v1", "variant": "base",
                  "n_winrate": 4, "n_questions": 2, "reward_id": "j", "reward_kind": "judge_pointwise"},
        "stage_uses": [{"arm": "eva", "iteration": 1, "name": "generate_pool", "key": "k", "reused": False,
                        "seconds": 1.0, "original_seconds": 1.0, "calls": 24}],
        "wall_seconds": 12.25,
    }
    text = json.dumps(study, default=str)
    record = StudyRecord.from_json(text)
    assert record.arms["eva"].seeds["0"].eval == {"win_rate_vs_theta0": "k1", "score": "k2"}
    assert record.arms["theta0"].seeds["0"].train_pairs is None and record.judge.n_winrate == 4
    assert record.stage_uses[0].calls == 24
    assert record.to_json() == text
    assert StudyRecord.from_json(None).arms == {}


def test_the_judge_validity_block_reads_the_run_directory_not_the_user_cache(tmp_path, monkeypatch):
    """A rebuilt report shows what judge-check measured against this run directory: checks
    with other limits elsewhere (they fill the per-user cache) do not change it."""
    import math

    from evalign.backends.scripted import ScriptedLLM
    from evalign.config import Config
    from evalign.eval.judge_check import run_judge_check
    from evalign.report.collect import collect
    from evalign.report.record import JudgeRecord, StudyRecord
    from evalign.store import RunStore

    monkeypatch.setenv("EVALIGN_CACHE", str(tmp_path / "cache"))

    def first_wins(conv, choices, prefix):  # a judge with a plain position bias
        return [math.log(0.7) if c == "A" else math.log(0.3) for c in choices]

    class Pool:
        def get(self, spec):
            return ScriptedLLM(choice_fn=first_wins, model_id="scripted:judge")

        def close(self):
            pass

    def check(out, limit):
        return run_judge_check(Config(), judge="judge", backend="scripted", kind="pairwise", limit=limit,
                               out=out, pool=Pool())[0]

    run = tmp_path / "study"
    probe = check(tmp_path / "probe", 6)
    with RunStore(run) as store:
        judge = JudgeRecord(probe.judge_id, probe.mode, probe.template_version, "base", n_winrate=8)
        store.set_meta("study", StudyRecord(judge=judge).to_json())

    def block():
        with RunStore(run) as store:
            return tables.judge_block(collect(store)["judge_validity"])

    assert "not measured" in block()  # the probe went to the user cache and its own directory
    check(run, 24)
    shown = block()
    assert "measured by judge-check in this run directory, labeled set builtin:labeled, --limit 24" in shown
    assert "on the subtle labeled pairs (two competent answers" in shown and "(n=12)" in shown
    assert "all 24 pairs" in shown  # the gross pairs and the whole set only as a sanity check
    for limit in (12, 48):  # other checks of the same judge, into the per-user cache
        check(tmp_path / f"elsewhere-{limit}", limit)
        assert block() == shown


def test_a_judge_that_is_also_the_reward_model_is_warned_about_beside_the_table(tmp_path):
    from evalign.report.collect import _shared_judge
    from evalign.report.record import JudgeRecord, StudyRecord

    def study(reward_id):
        return StudyRecord(judge=JudgeRecord("qwen-1.5b", "logprobs", "v", reward_id=reward_id,
                                             reward_kind="judge_pointwise"))

    assert _shared_judge(study("armorm")) is None and _shared_judge(study(None)) is None
    results = synthetic_results()
    assert "Warning: the reward model" not in tables.markdown(results)
    results["shared_judge"] = _shared_judge(study("qwen-1.5b"))
    md = tables.markdown(results)
    assert ("Warning: the reward model and the evaluation judge are the same model (qwen-1.5b) with the same "
            "1–10 grading template") in md
    _, page, _ = _build(results, tmp_path)
    assert "set eval.judge to another model" in page


def test_lineage_heading_labels_evol_quality_as_an_adaptation():
    chain = [{"id": 1, "text": "Tips for tomatoes?", "depth": 0, "origin": "seed"},
             {"id": 2, "text": "Tips for tomatoes on a shaded balcony?", "depth": 1, "origin": "evolved",
              "operator": "evol_quality", "mutation": "relevance"}]
    section = html._lineage_section({"lineage": {"evol_quality": [chain], "evol_instruct": [chain]}})
    assert "<h3>Operator: evol_quality (prompt-side adaptation)</h3>" in section
    assert "<h3>Operator: evol_instruct</h3>" in section


def test_the_block_says_why_win_rates_are_pairwise_from_the_shipped_grades_check():
    """The built-in judge's shipped checks, pairwise and pointwise, on the same 96 subtle pairs:
    the block sets the grades' accuracy beside the verdict's and says which separates better."""
    from evalign.report import collect

    judge = "llamacpp:qwen2.5-coder-1.5b-instruct@cc324af070c2"
    outcomes = {"eva": {"win": [0.5, 0.6, 0.4, 0.55]}, "arm": {"win": [0.6, 0.5, 0.5, 0.45]}}
    study = {"judge": {"judge_id": judge, "mode": "logprobs", "pair_version": "d621446cbefd", "n_winrate": 4,
                       "grade_version": "f5495ea0d61a"}}
    jv = collect._judge_validity(study, outcomes, "eva")
    assert jv["grades_accuracy"]["n"] == 96 and jv["grades_accuracy"]["value"] < jv["accuracy"]["value"]
    block = tables.judge_block(jv)
    assert ("Win rates use the pairwise verdict: the same judge's per-answer grades rank the better answer of the "
            "same pairs higher on 52.1 [42.2, 61.8]% (n=96) against 56.2 [46.3, 65.7]%, so the pairwise verdict "
            "separates them better.") in block
    del study["judge"]["grade_version"]  # a study recorded before the grades' version: no comparison
    assert "Win rates use" not in tables.judge_block(collect._judge_validity(study, outcomes, "eva"))
