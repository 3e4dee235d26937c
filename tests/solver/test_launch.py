"""Training under ``accelerate launch``: the command line, and a real one-process CPU launch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evalign.config import TrainConfig
from evalign.errors import ConfigError, EvalignError
from evalign.solver import launch
from evalign.solver.launch import SHIPPED_CONFIGS, accelerate_config_path, build_command, launch_training

PAIRS = [
    {"prompt": f"Name a colour number {i}.", "chosen": f"Blue is colour {i}.", "rejected": "no"}
    for i in range(4)
]

CPU_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
mixed_precision: 'no'
use_cpu: true
debug: false
num_machines: 1
machine_rank: 0
num_processes: 1
main_training_function: main
"""


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_command_for_each_shipped_config(name):
    cfg = TrainConfig(launcher="accelerate", accelerate_config=name, num_processes=8)
    path = accelerate_config_path(name)
    assert path.is_file() and path.name == f"{name}.yaml"
    argv = build_command("/runs/x/launch/abc/job.json", cfg, env={}, python="/venv/bin/python")
    assert argv == ["/venv/bin/python", "-m", "accelerate.commands.launch", "--config_file", str(path),
                    "--num_processes", "8", "-m", "evalign.solver.train_entry", "/runs/x/launch/abc/job.json"]


def test_shipped_configs_are_valid_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {name: load_config_from_file(str(accelerate_config_path(name))).distributed_type.value
             for name in SHIPPED_CONFIGS}
    assert kinds == {"ddp": "MULTI_GPU", "zero3": "DEEPSPEED", "fsdp": "FSDP"}
    zero3 = load_config_from_file(str(accelerate_config_path("zero3")))
    assert zero3.deepspeed_config["zero_stage"] == 3 and zero3.deepspeed_config["zero3_save_16bit_model"] is True
    assert zero3.mixed_precision == "bf16"
    fsdp = load_config_from_file(str(accelerate_config_path("fsdp")))
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_command_for_a_user_config_and_multinode_env(tmp_path):
    user = tmp_path / "my accelerate.yaml"
    user.write_text(CPU_CONFIG)
    cfg = TrainConfig(launcher="accelerate", accelerate_config=str(user), num_processes=16)
    env = {"EVALIGN_NUM_MACHINES": "2", "EVALIGN_MACHINE_RANK": "0", "EVALIGN_MAIN_PROCESS_IP": "10.0.0.1",
           "EVALIGN_MAIN_PROCESS_PORT": "29500", "UNRELATED": "x"}
    argv = build_command("job.json", cfg, env=env, python="py")
    assert argv == ["py", "-m", "accelerate.commands.launch", "--config_file", str(user.resolve()),
                    "--num_processes", "16", "--num_machines", "2", "--machine_rank", "0",
                    "--main_process_ip", "10.0.0.1", "--main_process_port", "29500",
                    "-m", "evalign.solver.train_entry", "job.json"]
    assert build_command("job.json", cfg)[0] == sys.executable


def test_an_unknown_config_is_a_one_line_error():
    with pytest.raises(ConfigError, match="zero4"):
        build_command("job.json", TrainConfig(accelerate_config="zero4"), env={})


def test_too_few_pairs_launch_nothing(tmp_path):
    res = launch_training("/base", PAIRS[:1], TrainConfig(launcher="accelerate", min_pairs=2), tmp_path / "o",
                          seed=0, run_dir=tmp_path)
    assert res.skipped and res.checkpoint == "/base" and not (tmp_path / "launch").exists()


def test_a_failing_launch_reports_its_tail(tmp_path, monkeypatch):
    script = "import sys; print('loading'); print('CUDA out of memory: boom', flush=True); sys.exit(3)"
    monkeypatch.setattr(launch, "build_command", lambda job, cfg, **kw: [sys.executable, "-c", script])
    with pytest.raises(EvalignError, match=r"(?s)exit 3.*boom"):
        launch_training("/base", PAIRS, TrainConfig(launcher="accelerate"), tmp_path / "o", seed=0,
                        run_dir=tmp_path, quiet=True)
    [job] = (tmp_path / "launch").iterdir()
    assert "boom" in (job / "train.log").read_text()
    assert {"pairs.jsonl", "job.json", "command.sh"} <= {p.name for p in job.iterdir()}


def test_a_real_single_process_launch_trains_the_tiny_model(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from evalign.solver.train import train_preference

    accel = tmp_path / "cpu.yaml"
    accel.write_text(CPU_CONFIG)
    cfg = TrainConfig(launcher="accelerate", accelerate_config=str(accel), num_processes=1, batch_size=2,
                      gradient_accumulation_steps=1, epochs=1, max_length=96, learning_rate=1e-3,
                      dtype="float32", warmup_ratio=0.0, lr_scheduler="constant")
    out = tmp_path / "run" / "checkpoints" / "it1"
    res = launch_training(str(tiny_model_dir), PAIRS, cfg, out, seed=3, run_dir=tmp_path / "run", quiet=True)
    assert not res.skipped and res.checkpoint == str(out.resolve()) and res.n_pairs == 4 and res.steps == 2
    assert len(res.losses) == 2
    meta = json.loads((out / "evalign_train.json").read_text())
    assert meta["launcher"] == "accelerate" and meta["num_processes"] == 1 and meta["seed"] == 3
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no staging left behind
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))
    assert changed

    # one process under accelerate trains as in-process training does
    ref = train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "inproc", seed=3, quiet=True)
    assert res.losses == pytest.approx(ref.losses, rel=1e-4, abs=1e-6)

    # a finished job is not launched again (the stage was killed after the job finished)
    again = launch_training(str(tiny_model_dir), PAIRS, cfg, out, seed=3, run_dir=tmp_path / "run", quiet=True)
    assert again.as_dict() == res.as_dict()
    assert Path(again.checkpoint).is_dir()
