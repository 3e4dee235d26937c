#!/usr/bin/env bash
# =====================================================================================
# NOT RUN IN THE SESSION THAT WROTE IT: no GPU was lent to that session. It is ready to run
# on one H100/H200; fill the "measured" row of docs/scaling.md with what it prints.
# =====================================================================================
#
# One eva iteration on one GPU with a 0.5B-2B policy, printing seconds and throughput per
# stage (sample, reward, creator, train) and writing $OUT/gpu_check.json. Target: < 8 min.
#
#   bash benchmarks/gpu_check.sh [--policy DIR] [--reward DIR] [--judge DIR] [--out DIR]
#                                [--backend auto|vllm|transformers] [--launcher accelerate|inprocess]
#
# The device machine has no network: nothing is downloaded there.
#   * Python packages evalign needs that its image lacks (pydantic, trl, datasets,
#     datasketch and their small dependencies) travel as wheels in ./.whl, made here by
#     `bash benchmarks/fetch_wheels.sh`, and are installed into /tmp (never into the image).
#     vLLM is used when it is importable there. Its wheel (hundreds of MB, pinned to its own
#     torch) cannot travel within a call's 64 MiB, so on this workplace's machines the policy
#     samples with the transformers backend unless vLLM is already installed; on a normal
#     GPU box `pip install -e ".[gpu]"` first.
#   * Models: --policy DIR (a local HF chat model, e.g. Qwen2.5-0.5B-Instruct), else the
#     built-in SmolLM2-135M materialized from its PyPI package if installed, else a random
#     Qwen2.5-0.5B-shaped model (0.37B with its 8k vocabulary) built on the spot (throughput
#     only). --reward DIR: a local classifier reward model; without it the reward is a
#     pointwise judge (--judge DIR, default the policy).
#
# Through this workplace's device tool (from the repo root here):
#   bash benchmarks/fetch_wheels.sh        # once: fills ./.whl (ignored by git)
#   run: command "bash benchmarks/gpu_check.sh --out $OUT", carry [".whl"], timeout_s 540
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/evalign-site .whl/*.whl
  export PYTHONPATH=/tmp/evalign-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
"$PY" - <<'PY'
import importlib.util as u
missing = [m for m in ("torch", "transformers", "accelerate", "trl", "datasets", "pydantic", "datasketch", "peft", "yaml", "rich", "typer")
           if u.find_spec(m) is None]
if missing:
    raise SystemExit(f"missing Python packages: {', '.join(missing)}; carry them as wheels (benchmarks/fetch_wheels.sh)")
print("vllm:", "yes" if u.find_spec("vllm") else "no (sampling with the transformers backend)")
PY
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
