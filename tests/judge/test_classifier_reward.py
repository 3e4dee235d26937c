"""The classifier reward model path on an ArmoRM-shaped checkpoint (remote code, Llama-3
tokenizer without a pad token) and on a stock transformers classifier whose pad is its eos."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from evalign.config import ModelSpec
from evalign.hf_compat import restore_removed_doc_names
from evalign.judge.reward import ClassifierReward
from evalign.testing import make_armorm_style_reward_model, make_llama3_style_tokenizer

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea."]
RESPONSES = [
    ["Paris.", "The capital of France is Paris, a city on the Seine.", "Lyon", "I do not know, sorry!"],
    ["Waves fold into foam / salt wind hums over the rocks / the tide keeps its time", "Sea.", "ok"],
]


@pytest.fixture(scope="module")
def armorm_dir(tmp_path_factory):
    return make_armorm_style_reward_model(tmp_path_factory.mktemp("armorm-style"))


@pytest.fixture(scope="module")
def stock_classifier_dir(tmp_path_factory):
    """transformers' own LlamaForSequenceClassification with pad_token_id = eos (<|eot_id|>)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("stock-classifier")
    tok = make_llama3_style_tokenizer(out)
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(out)
    return out


def _reward(path, **kw) -> ClassifierReward:
    return ClassifierReward(ModelSpec(model=str(path), backend="transformers", dtype="float32",
                                      trust_remote_code=True), **kw)


def test_armorm_style_remote_code_fails_without_the_compat_names(armorm_dir):
    """The fixture reproduces ArmoRM's failure in a fresh interpreter (no evalign shim)."""
    code = ("import transformers.models.llama.modeling_llama as m, sys\n"
            "if hasattr(m, 'LLAMA_INPUTS_DOCSTRING'): sys.exit(3)\n"
            "from transformers import AutoModelForSequenceClassification as A\n"
            f"A.from_pretrained({str(armorm_dir)!r}, trust_remote_code=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    if proc.returncode == 3:
        pytest.skip("this transformers still has LLAMA_INPUTS_DOCSTRING")
    assert proc.returncode != 0 and "LLAMA_INPUTS_DOCSTRING" in proc.stderr, proc.stderr[-2000:]


def test_restore_removed_doc_names_only_adds_missing(monkeypatch):
    import transformers.utils as tutils
    from transformers.models.llama import modeling_llama

    real = tutils.add_start_docstrings_to_model_forward
    monkeypatch.setattr(modeling_llama, "LLAMA_START_DOCSTRING", "kept", raising=False)
    restore_removed_doc_names(("llama", "no-such-model"))
    assert modeling_llama.LLAMA_START_DOCSTRING == "kept"
    assert tutils.add_start_docstrings_to_model_forward is real
    assert isinstance(modeling_llama.LLAMA_INPUTS_DOCSTRING, str)
    assert modeling_llama._CONFIG_FOR_DOC == "LlamaConfig"
    assert restore_removed_doc_names(("llama",)) == []  # idempotent


def test_armorm_style_scores_match_its_own_unpadded_forward(armorm_dir):
    """evalign's score is what ArmoRM's model card computes: one chat, no padding, no pad id."""
    rm = _reward(armorm_dir, batch_size=4)
    got = rm.score(PROMPTS, RESPONSES)
    assert all(math.isfinite(x) for row in got for x in row)
    assert len({round(x, 6) for row in got for x in row}) == sum(map(len, RESPONSES))

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(armorm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(armorm_dir, trust_remote_code=True).eval()
    assert model.config.pad_token_id is None
    for p, rs, row in zip(PROMPTS, RESPONSES, got):
        for r, s in zip(rs, row):
            text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                           tokenize=False)
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            with torch.inference_mode():
                ref = float(model(input_ids=ids).score[0])
            assert s == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("which", ["armorm", "stock"])
def test_batched_scores_equal_single_scores(which, armorm_dir, stock_classifier_dir):
    path = armorm_dir if which == "armorm" else stock_classifier_dir
    rm = _reward(path, batch_size=8)
    assert rm.tokenizer.pad_token_id in (None, rm.tokenizer.eos_token_id)
    batched = rm._score(PROMPTS, RESPONSES)
    rm.batch_size = 1
    single = rm._score(PROMPTS, RESPONSES)
    for b, s in zip(batched, single):
        assert b == pytest.approx(s, abs=1e-5)
    assert len({round(x, 6) for row in batched for x in row}) == sum(map(len, RESPONSES))


def test_revision_reaches_model_tokenizer_and_remote_code(armorm_dir, monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto import auto_factory

    calls: dict[str, dict] = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] = dict(kwargs)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy("tokenizer", AutoTokenizer.from_pretrained))
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained",
                        spy("model", AutoModelForSequenceClassification.from_pretrained))
    monkeypatch.setattr(auto_factory, "get_class_from_dynamic_module",
                        spy("code", auto_factory.get_class_from_dynamic_module))
    rev = "0123456789abcdef0123456789abcdef01234567"
    rm = ClassifierReward(ModelSpec(model=str(armorm_dir), backend="transformers", dtype="float32",
                                    trust_remote_code=True, revision=rev))
    assert calls["tokenizer"]["revision"] == rev
    assert calls["model"]["revision"] == rev and calls["model"]["code_revision"] == rev
    assert calls["code"]["code_revision"] == rev
    assert rm.reward_id.endswith(f"@{rev}")
    plain = _reward(armorm_dir)
    assert "revision" not in calls["model"] and plain.reward_id != rm.reward_id


def test_truncation_cuts_the_response_not_the_closing_tokens(armorm_dir):
    rm = _reward(armorm_dir, max_length=96)
    prompt, response = "Tell me a story.", "Once upon a time " * 40
    full = rm._chat_ids(prompt, response)
    assert len(full) > rm.max_length
    ids = rm.encode(prompt, response)
    assert len(ids) <= rm.max_length
    text = rm.tokenizer.decode(ids)
    head = rm._chat_ids(prompt, "")[:-1]  # everything up to the (empty) response's <|eot_id|>
    assert ids[: len(head)] == head  # the prompt and the assistant header are whole
    assert ids[-1] == rm.tokenizer.eos_token_id  # ArmoRM reads its score here
    kept = text.split("assistant<|end_header_id|>\n\n", 1)[1].removesuffix("<|eot_id|>")
    assert kept and response.startswith(kept) and len(kept) < len(response.strip())

    long_prompt = "Summarise: " + "words and more words " * 40
    ids = rm.encode(long_prompt, "Short answer.")
    assert len(ids) <= rm.max_length and ids[-1] == rm.tokenizer.eos_token_id
    assert rm.tokenizer.decode(ids).endswith("assistant<|end_header_id|>\n\nShort answer.<|eot_id|>")
    assert "Summarise: words" in rm.tokenizer.decode(ids)  # the prompt keeps its head

    scores = rm._score([prompt, long_prompt], [[response, "The end."], ["Short answer."]])
    assert all(math.isfinite(x) for row in scores for x in row)


def test_armorm_style_builder_writes_the_remote_code_layout(armorm_dir):
    config = json.loads((armorm_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_custom.LlamaForRewardModelWithGating"
    assert config["pad_token_id"] is None
    code = (armorm_dir / "modeling_custom.py").read_text()
    assert "from transformers.models.llama.modeling_llama import LLAMA_INPUTS_DOCSTRING" in code
    tok = transformers.AutoTokenizer.from_pretrained(armorm_dir)
    assert tok.eos_token == "<|eot_id|>" and tok.pad_token is None and tok.chat_template


def test_max_response_tokens_cuts_the_response_as_the_config_says(armorm_dir):
    from evalign.config import validate
    from evalign.judge.reward import build_reward_model

    cfg = validate({"solver": {"reward": {"kind": "classifier", "max_response_tokens": 8,
                                          "model": {"model": str(armorm_dir), "trust_remote_code": True}}}})
    rm = build_reward_model(cfg.solver.reward)
    prompt, response = "Tell me a story.", "Once upon a time " * 10
    ids = rm.encode(prompt, response)
    assert ids == rm._chat_ids(prompt, rm.tokenizer.decode(rm._ids(response)[:8]))
    assert ids[-1] == rm.tokenizer.eos_token_id
    assert rm.reward_id != _reward(armorm_dir).reward_id  # scores differ: cached apart


def test_a_model_built_from_the_config_alone_scores_as_the_loaded_one(armorm_dir, tmp_path):
    """weights=False writes config, code and tokenizer; the model is built from the config (as
    benchmarks/gpu_check.py builds an 8B one on the GPU) and handed to ClassifierReward."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    bare = make_armorm_style_reward_model(tmp_path / "bare", weights=False)
    assert not list(bare.glob("*.safetensors"))
    assert (bare / "config.json").read_text() == (armorm_dir / "config.json").read_text()
    restore_removed_doc_names(("llama",))
    config = AutoConfig.from_pretrained(bare, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=True)
    loaded = _reward(armorm_dir)
    model.load_state_dict(loaded.model.state_dict())  # same weights: same scores
    built = ClassifierReward(ModelSpec(model=str(bare), trust_remote_code=True), batch_size=4,
                             model=model, tokenizer=AutoTokenizer.from_pretrained(bare))
    assert built.device == "cpu" and not built.model.training
    for b, s in zip(built._score(PROMPTS, RESPONSES), loaded._score(PROMPTS, RESPONSES)):
        assert b == pytest.approx(s, abs=1e-5)
    with pytest.raises(ValueError, match="together"):
        ClassifierReward(ModelSpec(model=str(bare)), model=model)
