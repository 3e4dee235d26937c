"""Under DeepSpeed ZeRO-3 the policy is loaded in bf16 with the DeepSpeed config registered
first, so ``from_pretrained`` partitions it at load (zero.Init) instead of every rank
holding the whole model in host RAM. DeepSpeed itself is mocked (it is not a test dependency)."""

from __future__ import annotations

import pytest

from evalign.config import TrainConfig
from evalign.solver.launch import accelerate_config_path
from evalign.solver.train_entry import load_dtype, load_policy, zero3_init_config

BF16 = TrainConfig(dtype="bfloat16")


@pytest.fixture
def zero3_env(monkeypatch):
    """The variables ``accelerate launch --config_file zero3.yaml`` gives each rank."""
    from accelerate.commands.config.config_args import load_config_from_file

    shipped = load_config_from_file(str(accelerate_config_path("zero3")))
    assert shipped.deepspeed_config["zero3_init_flag"] is True and shipped.mixed_precision == "bf16"
    for var, value in {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                       "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true", "ACCELERATE_MIXED_PRECISION": "bf16",
                       "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "none",
                       "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "none",
                       "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true"}.items():
        monkeypatch.setenv(var, value)
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


@pytest.fixture
def fake_deepspeed(monkeypatch):
    """transformers' HfDeepSpeedConfig without DeepSpeed: registers itself as the real one does."""
    import transformers.integrations
    from transformers.integrations.deepspeed import set_hf_deepspeed_config

    events: list = []

    class FakeHfDeepSpeedConfig:
        def __init__(self, config):
            self.config = config
            set_hf_deepspeed_config(self)
            events.append(("deepspeed config", config))

        def is_zero3(self):
            return self.config["zero_optimization"]["stage"] == 3

    monkeypatch.setattr(transformers.integrations, "HfDeepSpeedConfig", FakeHfDeepSpeedConfig)
    return events


def test_the_load_dtype_under_each_launcher():
    import torch

    assert load_dtype(BF16, "DEEPSPEED", "bf16") == torch.bfloat16  # DeepSpeed keeps fp32 masters itself
    assert load_dtype(BF16, "MULTI_GPU", "bf16") == torch.float32  # fp32 weights, bf16 autocast
    assert load_dtype(BF16, "FSDP", "bf16") == torch.float32
    assert load_dtype(TrainConfig(dtype="float32"), "DEEPSPEED", "no") == torch.float32


def test_zero3_registers_the_deepspeed_config_before_the_bf16_load(zero3_env, fake_deepspeed, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import deepspeed_config, is_deepspeed_zero3_enabled

    sentinel = object()

    def from_pretrained(path, **kwargs):
        fake_deepspeed.append(("from_pretrained", {"dtype": kwargs.get("dtype"), "zero3": is_deepspeed_zero3_enabled(),
                                                   "bf16": (deepspeed_config() or {}).get("bf16")}))
        return sentinel

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    model, keep = load_policy("/base", BF16, "DEEPSPEED", "bf16")
    assert model is sentinel and keep is not None
    assert [name for name, _ in fake_deepspeed] == ["deepspeed config", "from_pretrained"]
    config, load = fake_deepspeed[0][1], fake_deepspeed[1][1]
    assert config["zero_optimization"]["stage"] == 3 and config["bf16"] == {"enabled": True}
    assert load == {"dtype": torch.bfloat16, "zero3": True, "bf16": {"enabled": True}}


def test_no_deepspeed_config_outside_zero3_init(zero3_env, fake_deepspeed, monkeypatch):
    assert zero3_init_config("MULTI_GPU", "bf16") is None
    assert zero3_init_config("FSDP", "bf16") is None
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO3_INIT", "false")
    assert zero3_init_config("DEEPSPEED", "bf16") is None
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO3_INIT", "true")
    assert zero3_init_config("DEEPSPEED", "bf16") is None
    assert fake_deepspeed == []


ZERO_INIT_SCRIPT = """
import os, sys
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2],
                  DS_ACCELERATOR="cpu", ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="3",
                  ACCELERATE_DEEPSPEED_ZERO3_INIT="true", ACCELERATE_MIXED_PRECISION="bf16")
import deepspeed
deepspeed.init_distributed(dist_backend="gloo")
from evalign.config import TrainConfig
from evalign.solver.train_entry import load_policy
model, keep = load_policy(sys.argv[1], TrainConfig(dtype="bfloat16"), "DEEPSPEED", "bf16")
params = [p for _, p in model.named_parameters()]
print("RESULT", sum(hasattr(p, "ds_id") for p in params), len(params), sum(p.numel() for p in params),
      sorted({str(p.ds_tensor.dtype) for p in params if hasattr(p, "ds_tensor")}))
"""


def test_with_deepspeed_installed_the_tiny_model_is_partitioned_at_load(tiny_model_dir, tmp_path):
    """Real DeepSpeed (CPU accelerator, one gloo process): every parameter is created by
    zero.Init -- a partitioned placeholder with no local elements -- and stored in bf16."""
    import importlib.util
    import os
    import socket
    import subprocess
    import sys

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "zero_init.py"
    script.write_text(ZERO_INIT_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(port)], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, out.stderr[-2000:]
    _, partitioned, total, local, dtypes = line.split(" ", 4)
    assert partitioned == total and int(total) > 0 and local == "0"
    assert dtypes == "['torch.bfloat16']"
