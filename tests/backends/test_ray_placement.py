"""Placement of GPU models on a local Ray cluster: the policy's workers and a second local
GPU model (a vLLM judge or creator) fit side by side. The cluster declares two fake GPUs
(Ray only counts them); the workers serve the scripted backend with the resources a vLLM
model would ask for. Skipped where Ray is not installed."""

from __future__ import annotations

import collections

import pytest

from evalign.backends.base import GenParams
from evalign.backends.ray_pool import actor_options, local_cluster_options, ray_available
from evalign.config import ModelSpec, RayConfig

pytestmark = pytest.mark.skipif(not ray_available(), reason='Ray is not installed (pip install -e ".[ray]")')

SCRIPTED = ModelSpec(model="echo", backend="scripted")


@pytest.fixture(scope="module")
def two_fake_gpus():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # the cluster evalign starts for run.ray.num_workers: 2, on a node with two GPUs
    ray.init(**local_cluster_options(RayConfig(num_workers=2)), num_gpus=2)
    yield ray
    ray.shutdown()


def _vllm_workers(ray, share: float, n: int = 2):
    from evalign.backends.ray_pool import RayLLM

    spec = ModelSpec(model="org/m", backend="vllm", gpu_memory_utilization=share)
    opts = actor_options(spec, "vllm", ray.cluster_resources()["GPU"])
    return RayLLM(SCRIPTED, n, options=opts, start_timeout_s=60), opts


def _share_per_gpu(*pools) -> dict[str, float]:
    used: dict[str, float] = collections.defaultdict(float)
    for llm, opts in pools:
        for w in llm.placement:
            [gpu] = w["gpus"]
            used[gpu] += opts["num_gpus"]
    return dict(used)


def test_a_policy_and_a_judge_at_the_default_share_are_both_placed(two_fake_gpus):
    ray = two_fake_gpus
    default = ModelSpec(model="org/m").gpu_memory_utilization
    policy = _vllm_workers(ray, default)
    judge = _vllm_workers(ray, default)  # before: every GPU worker took a whole CPU of the 2, so this waited
    try:
        used = _share_per_gpu(policy, judge)
        assert sum(len(llm.placement) for llm, _ in (policy, judge)) == 4
        assert all(share <= 1.0 for share in used.values())
        assert policy[1]["num_cpus"] < 1
        assert judge[0].generate([[{"role": "user", "content": "hi"}]], GenParams(max_new_tokens=4), [1])[0]
    finally:
        judge[0].close()
        policy[0].close()


def test_a_policy_over_half_a_gpu_gets_one_per_worker_and_a_judge_fits_beside(two_fake_gpus):
    ray = two_fake_gpus
    policy = _vllm_workers(ray, 0.55)
    judge = _vllm_workers(ray, 0.4)
    try:
        assert sorted(w["gpus"][0] for w in policy[0].placement) == ["0", "1"]  # one policy engine per GPU
        assert sorted(w["gpus"][0] for w in judge[0].placement) == ["0", "1"]
        assert _share_per_gpu(policy, judge) == {"0": pytest.approx(0.95), "1": pytest.approx(0.95)}
    finally:
        judge[0].close()
        policy[0].close()
