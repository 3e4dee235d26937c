"""A real two-process launch of DPO training on CPUs (gloo), with precomputed reference
log-probabilities: the ranks train disjoint shards, the step count is the global batch's,
and one checkpoint is written, by rank 0."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from evalign.config import TrainConfig
from evalign.solver import launch
from evalign.solver.launch import launch_training
from evalign.solver.train import expected_steps

PAIRS = [{"prompt": f"Name colour number {i}.", "chosen": f"Colour {i} is blue.", "rejected": "no"}
         for i in range(8)]

# MULTI_GPU makes accelerate start the ranks with torch.distributed.run (its MULTI_CPU
# launcher needs mpirun); without CUDA each rank then runs on the CPU with gloo.
TWO_PROCESS_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
mixed_precision: 'no'
use_cpu: false
num_machines: 1
machine_rank: 0
num_processes: 2
main_process_port: {port}
gpu_ids: all
rdzv_backend: static
same_network: true
main_training_function: main
"""

PROBE = Path(__file__).with_name("_launch_probe.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_disjoint_shards_into_one_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the two ranks would take GPUs; this checks the CPU (gloo) launch")
    from transformers import AutoModelForCausalLM

    accel = tmp_path / "two.yaml"
    accel.write_text(TWO_PROCESS_CONFIG.format(port=_free_port()))
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    monkeypatch.setenv("EVALIGN_PROBE_DIR", str(probe_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    build = launch.build_command

    def probed(job, cfg, **kw):  # the probe file in place of `-m evalign.solver.train_entry`
        argv = build(job, cfg, **kw)
        i = argv.index(launch.ENTRY_MODULE)
        return argv[:i - 1] + [str(PROBE)] + argv[i + 1:]

    monkeypatch.setattr(launch, "build_command", probed)
    cfg = TrainConfig(launcher="accelerate", accelerate_config=str(accel), num_processes=2, batch_size=1,
                      gradient_accumulation_steps=2, epochs=1, max_length=64, learning_rate=1e-3,
                      dtype="float32", warmup_ratio=0.0, lr_scheduler="constant", precompute_ref_logprobs=True)
    out = tmp_path / "run" / "checkpoints" / "it1"
    res = launch_training(str(tiny_model_dir), PAIRS, cfg, out, seed=1, run_dir=tmp_path / "run", quiet=True)

    # optimizer steps = pairs / (per-device batch x processes x accumulation) = 8 / (1 x 2 x 2)
    assert res.steps == 2 == expected_steps(len(PAIRS), cfg, processes=2)
    assert len(res.losses) == 2
    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    seen = [{tuple(row) for row in rank["rows"]} for rank in ranks]
    assert [len(rank["rows"]) for rank in ranks] == [4, 4]  # 2 steps x 2 micro-batches x 1 pair each
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == len(PAIRS)  # disjoint shards covering every pair
    assert all(all(rank["with_ref_logps"]) for rank in ranks)  # every batch read the precomputed log-probs

    # one checkpoint, written by rank 0 alone, renamed into place (no staging left)
    assert [r["saves"] for r in ranks] == [1, 0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["it1"]
    meta = json.loads((out / "evalign_train.json").read_text())
    assert meta["num_processes"] == 2 and meta["distributed_type"] == "MULTI_CPU" and meta["steps"] == 2
    assert not any(p.name.startswith(("_", "cache-")) for p in out.iterdir())
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))
