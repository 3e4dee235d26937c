from __future__ import annotations

import math

import pytest
import torch

from evalign.backends.base import GenParams, continuation_ids, sample_seed, trie_choice_logprobs
from evalign.backends.scripted import ScriptedLLM
from evalign.backends.transformers_backend import TransformersLLM
from evalign.errors import ModelNotFoundError

CONVS = [[{"role": "user", "content": f"Tell me about topic number {i}."}] for i in range(5)]
PARAMS = GenParams(max_new_tokens=12, temperature=0.9, top_p=0.9)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return TransformersLLM(str(tiny_model_dir), model_id="tiny", batch_size=8, dtype="float32")


def test_same_seed_same_text_different_seed_different_text(tiny):
    a = tiny.generate(CONVS, PARAMS, seeds=[1, 2, 3])
    b = tiny.generate(CONVS, PARAMS, seeds=[1, 2, 3])
    assert [[g.text for g in row] for row in a] == [[g.text for g in row] for row in b]
    assert all(len(row) == 3 for row in a)
    assert any(row[0].text != row[1].text for row in a)
    assert all(g.seed == s for row in a for g, s in zip(row, [1, 2, 3]))
    assert all(0 < g.completion_tokens <= PARAMS.max_new_tokens for row in a for g in row)


def test_a_sample_does_not_depend_on_its_batch(tiny_model_dir):
    # float64, so padding's rounding differences cannot flip a token of this near-uniform
    # random model: what is left to differ would be the sampling itself.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).double()
    llm = TransformersLLM(str(tiny_model_dir), model=model, batch_size=8)
    together = llm.generate(CONVS, PARAMS, seeds=[7, 8])
    alone = [llm.generate([c], PARAMS, seeds=[7])[0] for c in CONVS]
    assert [r[0].text for r in together] == [r[0].text for r in alone]


def test_rows_with_different_params_in_one_batch_match_their_own_batches(tiny_model_dir):
    """generate_each samples an evaluation's mixed temperatures (FastChat's per-category table)
    in one batch; each row is what a batch of its own params gives (float64, as above), ends at
    its own max_new_tokens and is cut at its own stop strings."""
    from transformers import AutoModelForCausalLM

    from evalign.backends.base import LLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).double()
    llm = TransformersLLM(str(tiny_model_dir), model=model, batch_size=8)
    greedy = GenParams(max_new_tokens=6, temperature=0.0, top_p=1.0)
    short = GenParams(max_new_tokens=3, temperature=0.7, top_p=0.9)
    plain = GenParams(max_new_tokens=12, temperature=1.0, top_p=1.0)
    params = [PARAMS, greedy, short, PARAMS, plain]
    mixed = llm.generate_each(CONVS, params, seeds=[7, 8])
    grouped = LLM.generate_each(llm, CONVS, params, seeds=[7, 8])  # one generate per distinct params
    assert [[g.text for g in r] for r in mixed] == [[g.text for g in r] for r in grouped]
    assert [[g.completion_tokens for g in r] for r in mixed] == [[g.completion_tokens for g in r] for r in grouped]
    assert all(g.completion_tokens <= p.max_new_tokens for r, p in zip(mixed, params) for g in r)
    assert mixed[1][0].text == mixed[1][1].text  # greedy: the seed does not matter
    assert {g.finish_reason for g in mixed[2]} == {"length"} and all(g.completion_tokens == 3 for g in mixed[2])
    with pytest.raises(ValueError, match="2 sampling params"):
        llm.generate_each(CONVS, params[:2], seeds=[7])


def test_greedy_matches_transformers_generate(tiny):
    params = GenParams(max_new_tokens=8, temperature=0.0, top_p=1.0)
    mine = tiny.generate(CONVS[:2], params, seeds=[0])
    tok, model = tiny.tokenizer, tiny.model
    for conv, row in zip(CONVS[:2], mine):
        ids = tok(tiny.render(conv), return_tensors="pt", add_special_tokens=False).input_ids
        out = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=tiny.eos_ids)
        ref = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert row[0].text == ref


def test_choice_logprobs_are_exact_next_token_logprobs(tiny):
    [lp] = tiny.choice_logprobs(CONVS[:1], ["A", "B"], assistant_prefix="Answer: ")
    ids = tiny.encode(tiny.render(CONVS[0], "Answer: "))
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    for choice, value in zip(["A", "B"], lp):
        [tid] = continuation_ids(tiny.encode, tiny.render(CONVS[0], "Answer: "), ids, choice)
        assert math.isclose(value, float(logits[tid]), abs_tol=1e-4)


def test_multi_token_choices_form_a_distribution(tiny):
    [lp] = tiny.choice_logprobs(CONVS[:1], [str(i) for i in range(1, 11)], assistant_prefix="Rating: ")
    total = sum(math.exp(x) for x in lp)
    assert 0 < total <= 1.0 + 1e-6


def test_trie_removes_the_mass_of_longer_choices():
    # vocab: 0="1", 1="0", 2="2"; after "1", P("0") = 0.5
    def dist(prefix):
        if prefix == ():
            return [math.log(0.6), math.log(0.1), math.log(0.3)]
        return [math.log(0.25), math.log(0.5), math.log(0.25)]

    lp = trie_choice_logprobs([(0,), (0, 1), (2,)], dist)
    assert math.isclose(math.exp(lp[0]), 0.6 * 0.5)  # "1" and stop
    assert math.isclose(math.exp(lp[1]), 0.6 * 0.5)  # "10"
    assert math.isclose(math.exp(lp[2]), 0.3)


def test_truncate_and_count_tokens(tiny):
    text = "one two three four five six seven eight nine ten " * 5
    cut = tiny.truncate(text, 5)
    assert tiny.count_tokens(cut) <= 6 and len(cut) < len(text)


def test_a_model_without_chat_template_is_an_error(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "nochat"
    shutil.copytree(tiny_model_dir, d)
    for f in d.glob("chat_template*"):
        f.unlink()
    cfg = d / "tokenizer_config.json"
    import json

    data = json.loads(cfg.read_text())
    data.pop("chat_template", None)
    cfg.write_text(json.dumps(data))
    with pytest.raises(ModelNotFoundError, match="no chat template; set chat_template"):
        TransformersLLM(str(d))
    llm = TransformersLLM(str(d), chat_template="{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    assert llm.generate(CONVS[:1], PARAMS, [0])[0][0].completion_tokens > 0


def test_sample_seed_mixes_prompt_and_seed():
    assert sample_seed(1, CONVS[0]) == sample_seed(1, CONVS[0])
    assert sample_seed(1, CONVS[0]) != sample_seed(2, CONVS[0])
    assert sample_seed(1, CONVS[0]) != sample_seed(1, CONVS[1])


def test_scripted_backend_records_requests():
    llm = ScriptedLLM()
    out = llm.generate(CONVS[:2], PARAMS, [0, 1])
    assert len(llm.requests) == 4 and out[0][0].text != out[0][1].text
    lp = llm.choice_logprobs(CONVS[:1], ["A", "B"])[0]
    assert math.isclose(sum(math.exp(x) for x in lp), 1.0)


def test_hub_id_loading_path_works_on_a_local_directory(tiny_model_dir):
    """The path GPU users take (from_pretrained on a checkpoint) through load_llm."""
    from evalign.backends import load_llm
    from evalign.config import ModelSpec

    llm = load_llm(ModelSpec(model=str(tiny_model_dir), backend="transformers"))
    assert llm.generate(CONVS[:1], PARAMS, [0])[0][0].completion_tokens > 0
    with pytest.raises(ModelNotFoundError, match="could not be loaded with transformers"):
        load_llm(ModelSpec(model="evalign-test/does-not-exist", backend="transformers"))


def test_sample_seed_value_is_stable():
    """The seed every backend samples with is part of every cached sample's identity."""
    conv = [{"role": "system", "content": "s"}, {"role": "user", "content": "héllo ✓"}]
    assert sample_seed(7, conv) == 2838234855144188695
    assert sample_seed(0, []) == 3456079177858693020


def test_every_backend_registers_once_with_its_class_traits():
    """The registry knows each backend's traits without importing it; they must be its class's."""
    from evalign import config
    from evalign.registry import BACKENDS

    assert set(BACKENDS.names()) | {"auto"} == set(config.BACKENDS)
    for name in BACKENDS.names():
        info = BACKENDS.get(name)
        assert info.name == name and info.cls().traits == info.traits, name


def test_unknown_backend_is_a_config_error():
    from evalign.backends import load_llm, traits_of
    from evalign.config import ModelSpec
    from evalign.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        traits_of("nope")
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        load_llm(ModelSpec(model="echo", backend="scripted").model_copy(update={"backend": "nope"}))


def test_asking_a_backends_traits_imports_no_backend():
    """Model ids and routing are decided from the config alone: torch, httpx, llama.cpp and
    vLLM are imported only when a model is built."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from evalign.backends.pool import spec_model_id\n"
        "from evalign.backends.ray_pool import actor_options\n"
        "from evalign.config import ModelSpec\n"
        "from evalign.errors import ModelNotFoundError\n"
        "from evalign.weights import check_model_name\n"
        "for b in ('transformers', 'llamacpp', 'openai', 'vllm', 'scripted'):\n"
        "    spec = ModelSpec(model='org/m', backend=b)\n"
        "    spec_model_id(spec); actor_options(spec, b, 1)\n"
        "    try:\n"
        "        check_model_name('org/m', b)\n"
        "    except ModelNotFoundError:\n"
        "        pass  # llama.cpp refuses a hub id; the check itself must stay light\n"
        "heavy = [m for m in ('torch', 'httpx', 'llama_cpp', 'vllm', 'evalign.backends.openai_compat',\n"
        "                     'evalign.backends.transformers_backend') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_split_builtin_assembles_atomically_and_checks_its_sha256(tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    from evalign import weights

    parts = [tmp_path / f"part{i}.bin" for i in range(3)]
    for i, p in enumerate(parts):
        p.write_bytes(bytes([i]) * (1000 + i))
    whole = b"".join(p.read_bytes() for p in parts)
    base = weights.BUILTIN_MODELS["qwen2.5-coder-1.5b-instruct"]
    good = dataclasses.replace(base, sha256=hashlib.sha256(whole).hexdigest())
    monkeypatch.setenv("EVALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "_part_paths", lambda m: parts)

    monkeypatch.setitem(weights.BUILTIN_MODELS, base.name, dataclasses.replace(good, sha256="0" * 64))
    with pytest.raises(ModelNotFoundError, match="assembled file has sha256"):
        weights.gguf_path(base.name)
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())

    monkeypatch.setitem(weights.BUILTIN_MODELS, base.name, good)
    path = weights.gguf_path(base.name)
    assert path.read_bytes() == whole and path.with_suffix(".sha256").read_text() == good.sha256 + "\n"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, path.with_suffix(".sha256").name])


def test_a_downloaded_hub_id_is_found_in_the_hub_cache_as_huggingface_hub_finds_it(tmp_path, monkeypatch):
    from huggingface_hub import constants, try_to_load_from_cache

    from evalign import weights

    repo = tmp_path / "models--org--cached"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (tmp_path / "models--org--stale" / "snapshots" / "old").mkdir(parents=True)  # no ref, no config
    (tmp_path / "models--org--stale" / "snapshots" / "old" / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    for name, cached in (("org/cached", True), ("org/stale", False), ("org/absent", False)):
        assert weights._hub_cached(name) is cached
        assert isinstance(try_to_load_from_cache(name, "config.json", cache_dir=str(tmp_path)), str) is cached


def test_a_gguf_is_dequantized_on_every_transformers_version():
    import types

    import transformers

    from evalign import weights

    # before 5.17 there is no GgufConfig, a GGUF always loads dense and a quantization_config is refused
    assert weights._gguf_dequantize_kwargs(types.SimpleNamespace()) == {}
    kwargs = weights._gguf_dequantize_kwargs(transformers)
    if hasattr(transformers, "GgufConfig"):
        assert kwargs["quantization_config"].dequantize is True
    else:
        assert kwargs == {}
