"""``run.executor: ray``: a model served by Ray actors gives exactly the in-process results.

Starts a local Ray cluster with 2 worker CPUs; skipped where Ray is not installed."""

from __future__ import annotations

import pytest

from evalign.backends import load_llm
from evalign.backends.base import GenParams
from evalign.backends.ray_pool import actor_options, plan_generate, ray_available, split
from evalign.config import ModelSpec, RayConfig
from evalign.errors import ConfigError

needs_ray = pytest.mark.skipif(not ray_available(), reason='Ray is not installed (pip install -e ".[ray]")')

CONVS = [[{"role": "user", "content": f"Write one line about subject {i}."}] for i in range(4)]
PARAMS = GenParams(max_new_tokens=8, temperature=0.9, top_p=0.9)


def test_split_and_plan_cover_every_sample_once():
    assert split(5, 2) == [range(0, 3), range(3, 5)]
    assert split(1, 4) == [range(0, 1)]
    assert split(0, 3) == []
    for n_convs, n_seeds, workers in ((5, 3, 2), (1, 6, 4), (2, 1, 8), (3, 3, 3), (0, 2, 2)):
        cells = [(i, j) for ci, sj in plan_generate(n_convs, n_seeds, workers) for i in ci for j in sj]
        assert sorted(cells) == [(i, j) for i in range(n_convs) for j in range(n_seeds)]
        assert len(plan_generate(n_convs, n_seeds, workers)) <= workers
    assert len(plan_generate(1, 6, 4)) == 4  # few prompts: split by seeds


def test_actor_options_share_gpus_and_cpus():
    vllm = ModelSpec(model="org/m", backend="vllm", gpu_memory_utilization=0.45)
    assert actor_options(vllm, "vllm", 8)["num_gpus"] == 0.45
    tp = ModelSpec(model="org/m", backend="vllm", tensor_parallel_size=2)
    assert actor_options(tp, "vllm", 8)["num_gpus"] == 2.0
    assert actor_options(vllm, "vllm", 8)["num_cpus"] == actor_options(tp, "vllm", 8)["num_cpus"] == 0.25
    cpu = actor_options(ModelSpec(model="org/m"), "transformers", 0)
    assert cpu["num_gpus"] == 0 and cpu["num_cpus"] < 1 and cpu["scheduling_strategy"] == "SPREAD"


@pytest.fixture(scope="module")
def ray_cluster():
    if not ray_available():
        pytest.skip('Ray is not installed (pip install -e ".[ray]")')
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_spec(tiny_model_dir):
    # batch_size 3 = one prompt (and its samples) per forward pass in both executors
    return ModelSpec(model=str(tiny_model_dir), backend="transformers", batch_size=3)


@pytest.fixture(scope="module")
def tiny_pair(ray_cluster, tiny_spec):
    from evalign.backends.ray_pool import RayLLM

    local = load_llm(tiny_spec, model_id="tiny")
    remote = RayLLM(tiny_spec, 2, model_id="tiny")
    yield local, remote
    remote.close()


def _rows(out):
    return [[(g.text, g.seed, g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in row] for row in out]


@needs_ray
def test_generation_is_identical_through_ray(tiny_pair):
    local, remote = tiny_pair
    seeds = [11, 12, 13]
    expected = _rows(local.generate(CONVS, PARAMS, seeds))
    assert _rows(remote.generate(CONVS, PARAMS, seeds)) == expected  # split by prompts
    assert len({t for row in expected for t, *_ in row}) > 1
    one = _rows(local.generate(CONVS[:1], PARAMS, seeds))
    assert _rows(remote.generate(CONVS[:1], PARAMS, seeds)) == one  # split by seeds
    assert remote.stats.calls == len(CONVS) * 3 + 3
    assert remote.count_tokens("a few words here") == local.count_tokens("a few words here")
    assert remote.truncate("one two three four five", 2) == local.truncate("one two three four five", 2)


@needs_ray
def test_choice_logprobs_are_identical_through_ray(ray_cluster, tiny_pair):
    from evalign.backends.ray_pool import RayLLM

    local, remote = tiny_pair
    scores = [str(i) for i in range(1, 11)]
    assert remote.choice_logprobs(CONVS, scores, "Rating: [[") == local.choice_logprobs(CONVS, scores, "Rating: [[")
    spec = ModelSpec(model="echo", backend="scripted")
    scripted_local = load_llm(spec)
    scripted_remote = RayLLM(spec, 2)
    try:
        assert scripted_remote.model_id == scripted_local.model_id
        assert scripted_remote.choice_logprobs(CONVS, ["A", "B"], "Verdict: ") == \
            scripted_local.choice_logprobs(CONVS, ["A", "B"], "Verdict: ")
        assert _rows(scripted_remote.generate(CONVS, PARAMS, [1, 2])) == _rows(scripted_local.generate(CONVS, PARAMS, [1, 2]))
    finally:
        scripted_remote.close()


@needs_ray
def test_model_pool_serves_models_through_ray(ray_cluster, tiny_spec, tmp_path):
    from evalign.backends.ray_pool import RayLLM
    from evalign.generation import cached_generate
    from evalign.backends.pool import ModelPool
    from evalign.store import RunStore

    pool = ModelPool(executor="ray", ray_cfg=RayConfig(num_workers=2))
    store = RunStore(tmp_path / "run")
    try:
        judge = pool.get(ModelSpec(model="echo", backend="scripted"))
        policy = pool.policy(tiny_spec, None, "tiny-policy")
        assert not policy.loaded and not judge.loaded
        out, new = cached_generate(store, policy, CONVS[:2], PARAMS, [5, 6])
        assert isinstance(policy.inner, RayLLM) and new == 4
        again, new_again = cached_generate(store, policy, CONVS[:2], PARAMS, [5, 6])  # the driver wrote the store
        assert new_again == 0 and _rows(again) == _rows(out)
        assert judge.choice_logprobs(CONVS[:1], ["A", "B"])[0] == load_llm(
            ModelSpec(model="echo", backend="scripted")).choice_logprobs(CONVS[:1], ["A", "B"])[0]
        assert isinstance(judge.inner, RayLLM)
    finally:
        pool.close()
        store.close()
    assert ray_cluster.is_initialized()  # the pool did not start Ray, so it leaves it running


@needs_ray
def test_a_worker_user_error_is_a_one_line_error(ray_cluster):
    from evalign.backends.ray_pool import RayLLM

    with pytest.raises(ConfigError, match="no scripted model 'nope'"):
        RayLLM(ModelSpec(model="nope", backend="scripted"), 1)
