"""The vLLM backend. vLLM needs a GPU, so most tests drive ``VllmLLM`` with a fake engine
over the tiny transformers model (its pure helpers and its request/response mapping);
the test against a real engine runs only where vLLM, a GPU and a model are present."""

from __future__ import annotations

import importlib.util
import math
import os
import random
import sys
from types import SimpleNamespace as NS

import pytest
import torch

from evalign.backends.base import GenParams, sample_seed, trie_choice_logprobs
from evalign.backends.vllm_backend import (
    SEED_MASK,
    VllmLLM,
    check_raw_logprobs,
    choice_logprobs_from_edges,
    edge_sampling_kwargs,
    engine_kwargs,
    explicit_params,
    read_edge_logprob,
    sampling_kwargs,
    trie_edges,
)
from evalign.config import ModelSpec
from evalign.errors import BackendError, ConfigError, ModelNotFoundError

CONVS = [[{"role": "user", "content": f"Tell me about topic number {i}."}] for i in range(3)]
HAVE_VLLM = importlib.util.find_spec("vllm") is not None


# ---------------------------------------------------------------------------- pure helpers


def test_sampling_kwargs_one_request_per_prompt_and_seed():
    p = GenParams(max_new_tokens=32, temperature=0.7, top_p=0.9, stop=("###",))
    kw = sampling_kwargs(p, 5, CONVS[0])
    assert kw == {"n": 1, "seed": sample_seed(5, CONVS[0]) & SEED_MASK, "temperature": 0.7, "top_p": 0.9,
                  "max_tokens": 32, "skip_special_tokens": True, "stop": ["###"]}
    assert 0 <= kw["seed"] <= SEED_MASK
    assert sampling_kwargs(p, 5, CONVS[1])["seed"] != kw["seed"]  # the prompt is mixed in
    assert sampling_kwargs(p, 6, CONVS[0])["seed"] != kw["seed"]
    greedy = sampling_kwargs(GenParams(max_new_tokens=4, temperature=0.0, top_p=0.5), 0, CONVS[0])
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and "stop" not in greedy
    assert edge_sampling_kwargs(17) == {"n": 1, "max_tokens": 1, "temperature": 0.0,
                                        "allowed_token_ids": [17], "logprobs": 1}


def test_engine_kwargs_map_the_model_spec():
    spec = ModelSpec(model="org/m", backend="vllm", dtype="bfloat16", gpu_memory_utilization=0.45,
                     max_model_len=4096, trust_remote_code=True)
    kw = engine_kwargs(spec, "/ckpt", {"model", "tensor_parallel_size"})
    assert kw == {"model": "/ckpt", "tensor_parallel_size": 1, "gpu_memory_utilization": 0.45,
                  "enable_prefix_caching": True, "dtype": "bfloat16", "trust_remote_code": True, "seed": 0,
                  "max_model_len": 4096}
    assert engine_kwargs(spec, "/ckpt", {"logprobs_mode"})["logprobs_mode"] == "raw_logprobs"
    tp = ModelSpec(model="org/m", backend="vllm", tensor_parallel_size=2)
    assert engine_kwargs(tp, "/c", set(), in_ray_worker=True)["distributed_executor_backend"] == "mp"
    assert "distributed_executor_backend" not in engine_kwargs(tp, "/c", set())
    dp = ModelSpec(model="org/m", backend="vllm", data_parallel_size=4)
    with pytest.raises(ConfigError, match="run.executor: ray"):
        engine_kwargs(dp, "/c", {"model", "tensor_parallel_size"})
    assert engine_kwargs(dp, "/c", {"data_parallel_size"})["data_parallel_size"] == 4


def test_explicit_params_ignores_kwargs():
    def f(self, model, *, tensor_parallel_size=1, **kwargs):
        pass

    assert explicit_params(f) == {"model", "tensor_parallel_size"}


def test_trie_edges_are_what_the_trie_reads():
    # "1" = [1], "10" = [1, 0], "2" = [2], "A B" = [5, 6]
    edges = trie_edges([[1], [1, 0], [2], [5, 6]])
    assert edges == [((), 1), ((1,), 0), ((), 2), ((), 5), ((5,), 6)]
    with pytest.raises(ValueError):
        trie_edges([[1], []])


def test_edges_give_the_exact_trie_logprobs():
    rng = random.Random(0)
    vocab = 12
    choices = [[1], [1, 0], [2], [3, 4, 5], [3, 4], [7]]
    dists = {}

    def dist(prefix):
        if prefix not in dists:
            raw = [rng.gauss(0, 2) for _ in range(vocab)]
            z = math.log(sum(math.exp(r) for r in raw))
            dists[prefix] = [r - z for r in raw]
        return dists[prefix]

    full = trie_choice_logprobs(choices, dist)
    edge_lp = {(p, t): dist(p)[t] for p, t in trie_edges(choices)}
    assert choice_logprobs_from_edges(choices, edge_lp) == pytest.approx(full, abs=1e-12)
    # "1" loses the mass of continuing into "10"; the values stay a sub-distribution
    assert sum(math.exp(x) for x in full) <= 1 + 1e-9


def test_post_filter_logprobs_are_detected():
    check_raw_logprobs({((), 1): -0.5, ((), 2): -1.2})
    check_raw_logprobs({((), 1): 0.0, ((1,), 0): 0.0})  # a chain, not siblings: possible
    with pytest.raises(BackendError, match="raw_logprobs"):
        check_raw_logprobs({((), 1): 0.0, ((), 2): 0.0})


def test_read_edge_logprob():
    out = NS(outputs=[NS(logprobs=[{4: NS(logprob=-1.5), 9: NS(logprob=-0.1)}])])
    assert read_edge_logprob(out, 4) == -1.5
    with pytest.raises(BackendError):
        read_edge_logprob(out, 5)
    with pytest.raises(BackendError):
        read_edge_logprob(NS(outputs=[NS(logprobs=None)]), 4)


# ---------------------------------------------------------------------------- VllmLLM over a fake engine


class FakeSamplingParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FakeEngine:
    """``vllm.LLM``'s surface over a transformers model: edge requests (allowed_token_ids)
    get the exact raw next-token log-probability, sampling requests a seed-tagged text."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.requests = model, tokenizer, []

    def get_tokenizer(self):
        return self.tokenizer

    @torch.no_grad()
    def generate(self, prompts, sampling, use_tqdm=True):
        assert len(prompts) == len(sampling) and use_tqdm is False
        outs = []
        for p, sp in zip(prompts, sampling):
            ids = p["prompt_token_ids"]
            self.requests.append((ids, sp))
            if getattr(sp, "allowed_token_ids", None):
                (t,) = sp.allowed_token_ids
                lp = self.model(torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)
                outs.append(NS(outputs=[NS(text="", token_ids=[t], finish_reason="length",
                                           logprobs=[{t: NS(logprob=float(lp[t]))}])]))
            else:
                reason = "length" if sp.seed % 2 else "stop"
                outs.append(NS(outputs=[NS(text=f"  sample {sp.seed} \n", token_ids=[1, 2, 3],
                                           finish_reason=reason, logprobs=None)]))
        return outs


@pytest.fixture(scope="module")
def fake_pair(tiny_model_dir):
    from evalign.backends.transformers_backend import TransformersLLM

    ref = TransformersLLM(str(tiny_model_dir), model_id="tiny", batch_size=8)
    engine = FakeEngine(ref.model, ref.tokenizer)
    spec = ModelSpec(model=str(tiny_model_dir), backend="vllm")
    llm = VllmLLM(spec, path=str(tiny_model_dir), model_id="tiny-vllm", llm=engine,
                  sampling_params_cls=FakeSamplingParams)
    return ref, engine, llm


def test_generate_sends_one_seeded_request_per_sample(fake_pair):
    ref, engine, llm = fake_pair
    engine.requests.clear()
    params = GenParams(max_new_tokens=16, temperature=0.8, top_p=0.95)
    out = llm.generate(CONVS, params, seeds=[3, 4])
    assert [len(row) for row in out] == [2, 2, 2]
    assert len(engine.requests) == 6
    for k, (ids, sp) in enumerate(engine.requests):
        conv, seed = CONVS[k // 2], [3, 4][k % 2]
        rendered = ref.tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        assert ids == ref.tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the model's own template
        assert sp.seed == sample_seed(seed, conv) & SEED_MASK and sp.n == 1 and sp.max_tokens == 16
    g = out[1][0]
    assert g.text == f"sample {sample_seed(3, CONVS[1]) & SEED_MASK}" and g.seed == 3
    assert g.completion_tokens == 3 and g.prompt_tokens == len(engine.requests[2][0])
    assert {x.finish_reason for row in out for x in row} <= {"stop", "length"}
    assert llm.stats.calls >= 6


def test_choice_logprobs_match_the_transformers_backend(fake_pair):
    ref, engine, llm = fake_pair
    for choices, prefix in ((["A", "B"], "Answer: "), ([str(i) for i in range(1, 11)], "Rating: [[")):
        mine = llm.choice_logprobs(CONVS[:2], choices, assistant_prefix=prefix)
        theirs = ref.choice_logprobs(CONVS[:2], choices, assistant_prefix=prefix)
        for a, b in zip(mine, theirs):
            assert a == pytest.approx(b, abs=1e-4)


def test_count_and_truncate_use_the_tokenizer(fake_pair):
    ref, _engine, llm = fake_pair
    text = "one two three four five six seven"
    assert llm.count_tokens(text) == ref.count_tokens(text)
    assert llm.truncate(text, 3) == ref.truncate(text, 3)


def test_missing_vllm_is_a_one_line_error(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    spec = ModelSpec(model=str(tiny_model_dir), backend="vllm")
    with pytest.raises(ModelNotFoundError, match=r'pip install -e "\.\[gpu\]"'):
        VllmLLM(spec, path=str(tiny_model_dir))


def test_a_prompt_longer_than_max_model_len_is_a_clear_error(fake_pair, tiny_model_dir):
    ref, engine, _llm = fake_pair
    spec = ModelSpec(model=str(tiny_model_dir), backend="vllm", max_model_len=256)
    llm = VllmLLM(spec, path=str(tiny_model_dir), llm=engine, sampling_params_cls=FakeSamplingParams)
    long = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(BackendError, match="max_model_len=256"):
        llm.generate([long], GenParams(max_new_tokens=4), seeds=[0])
    with pytest.raises(BackendError, match="max_model_len=256"):
        llm.choice_logprobs([long], ["A", "B"])


# ---------------------------------------------------------------------------- a real engine


@pytest.mark.skipif("EVALIGN_VLLM_TEST_MODEL" not in os.environ,
                    reason="set EVALIGN_VLLM_TEST_MODEL to a small local HF chat model directory")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a GPU")
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (pip install -e '.[gpu]')")
def test_real_vllm_matches_transformers():
    from evalign.backends.transformers_backend import TransformersLLM

    path = os.environ["EVALIGN_VLLM_TEST_MODEL"]
    spec = ModelSpec(model=path, backend="vllm", dtype="float32", gpu_memory_utilization=0.3, max_model_len=2048)
    llm = VllmLLM(spec, path=path, model_id="vllm-test")
    try:
        params = GenParams(max_new_tokens=24, temperature=0.8, top_p=0.95)
        a = llm.generate(CONVS, params, seeds=[1, 2])
        b = llm.generate(CONVS[::-1], params, seeds=[1, 2])[::-1]
        assert [[g.text for g in r] for r in a] == [[g.text for g in r] for r in b]
        assert any(r[0].text != r[1].text for r in a)
        choices = [str(i) for i in range(1, 11)]
        mine = llm.choice_logprobs(CONVS[:2], choices, assistant_prefix="Rating: [[")
    finally:
        llm.close()
    ref = TransformersLLM(path, model_id="ref", dtype="float32")
    theirs = ref.choice_logprobs(CONVS[:2], choices, assistant_prefix="Rating: [[")
    for x, y in zip(mine, theirs):
        assert x == pytest.approx(y, abs=2e-2)

