#!/usr/bin/env bash
# =====================================================================================
# NOT RUN ON A GPU YET. Tried on CPU only (no CUDA: every stage at tiny sizes, the GPU
# sizes skipped), with transformers 5.24 and with 5.17. Made for one H200 with torch 2.11
# and transformers 5.17 preinstalled (Python 3.12), no TRL, no vLLM, no package index.
# Fill the "measured" rows of docs/scaling.md with what it prints.
# =====================================================================================
#
# Per-stage GPU throughput of evalign's own code, each stage with what ran, its throughput,
# its TFLOP/s and that as a fraction of the bf16 peak (--peak-tflops, default 790):
# policy sampling through the transformers backend (random Llama-3.2-1B-shaped policy,
# bf16), classifier scoring through ClassifierReward (random ArmoRM-shaped 8B, bf16, built
# on the GPU), DPO through train_preference with packed batches (bf16 autocast), then one
# eva iteration through the library if the time left allows. Writes $OUT/gpu_check.json
# (after every stage), gpu_check.md (the table) and gpu_check.log (all it printed). Sizes,
# FLOP formulas and per-stage time estimates (about 4-5.5 min at 30-40% of peak where
# compute-bound): benchmarks/gpu_check.py's header. The whole script stays inside 8
# minutes (GPU_CHECK_BUDGET seconds, default 480): Python gets what is left after the
# install, and starts no stage it has no time for.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--rm-size 1b] [--e2e off] [gpu_check.py options]
#
# Nothing is downloaded. Python packages the box lacks travel as wheels in ./.whl (made here
# by `bash benchmarks/fetch_wheels.sh`, ~5.3 MiB); a carried wheel is installed (into
# /tmp/evalign-site, never into the image) only when the box's copy is missing or older.
# The box's torch and transformers are used as they are. The script then lists what is
# still missing and any version need left unmet; a stage whose packages are missing is
# skipped and named. vLLM is used by the end-to-end stage only if importable.
#
# Without CUDA (e.g. on a developer machine) it runs every stage at tiny sizes and prints
# "no GPU: ..."; it exits 0 when every stage it ran passed.
#
# Through this workplace's device tool, from the repo root:
#   bash benchmarks/fetch_wheels.sh        # here, once: fills ./.whl
#   run: command "bash benchmarks/gpu_check.sh --out $OUT", carry [".whl"], timeout_s 540
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${GPU_CHECK_BUDGET:-480}
SITE=${EVALIGN_SITE:-/tmp/evalign-site}
outdir=""
for ((i = 1; i <= $#; i++)); do [[ "${!i}" == "--out" ]] && { j=$((i + 1)); outdir=${!j:-}; }; done
if [[ -n "$outdir" ]]; then  # everything printed also goes to OUT/gpu_check.log
  mkdir -p "$outdir" && exec > >(tee "$outdir/gpu_check.log") 2>&1
fi

# A Python with torch: $PYTHON, else python3, else this checkout's (or its main worktree's) .venv.
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  common=$(git rev-parse --git-common-dir 2>/dev/null || echo .git)
  for cand in python3 .venv/bin/python "$common/../.venv/bin/python"; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch" 2>/dev/null; then PY=$cand; break; fi
  done
  PY=${PY:-python3}
fi
echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: not available (no GPU here)"

# Carried wheels: only those whose distribution is missing here or older than the wheel.
if compgen -G ".whl/*.whl" >/dev/null; then
  mapfile -t pick < <("$PY" - <<'PY'
import glob, os, sys
import importlib.metadata as md
try:
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version
here = set(sys_tags())
chosen, note = {}, []
for f in sorted(glob.glob(".whl/*.whl")):
    name, ver, _, tags = parse_wheel_filename(os.path.basename(f))
    if not tags & here:
        note.append(f"  {name} {ver}: not for this Python: not installed")
        continue
    try:
        have = Version(md.version(name))
    except md.PackageNotFoundError:
        have = None
    if have is None or have < ver:
        chosen[canonicalize_name(name)] = f
        note.append(f"  {name} {ver}: carried (here: {have or 'missing'})")
    else:
        note.append(f"  {name}: {have} here (carried {ver}: not installed)")
# pydantic pins pydantic-core exactly: install or keep them together
group = {"pydantic", "pydantic-core"}
if group & set(chosen):
    for f in glob.glob(".whl/*.whl"):
        n = canonicalize_name(parse_wheel_filename(os.path.basename(f))[0])
        if n in group:
            chosen[n] = f
print("wheels:\n" + "\n".join(note), file=sys.stderr)
for f in chosen.values():
    print(f)
PY
)
  if ((${#pick[@]})); then
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${pick[@]}"
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  fi
else
  echo "no ./.whl: nothing carried (bash benchmarks/fetch_wheels.sh makes it)"
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# What evalign's GPU paths import, what is missing, and version needs left unmet.
"$PY" - <<'PY' || true
import importlib.metadata as md
import importlib.util as u
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
mods = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
        "huggingface_hub": "huggingface-hub", "accelerate": "accelerate", "numpy": "numpy", "trl": "trl",
        "peft": "peft", "datasets": "datasets", "pyarrow": "pyarrow", "pandas": "pandas", "xxhash": "xxhash",
        "dill": "dill", "multiprocess": "multiprocess", "fsspec": "fsspec", "pydantic": "pydantic",
        "pydantic_core": "pydantic-core", "typing_extensions": "typing-extensions", "datasketch": "datasketch",
        "scipy": "scipy", "yaml": "pyyaml", "jinja2": "jinja2", "rich": "rich", "typer": "typer", "httpx": "httpx",
        "vllm": "vllm"}
have, missing = [], []
for mod, dist in mods.items():
    if u.find_spec(mod) is None:
        missing.append(mod)
        continue
    try:
        have.append(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        have.append(f"{dist} ?")
print("packages: " + ", ".join(have))
missing = [m for m in missing if m != "vllm"]
print("vllm: " + ("yes" if u.find_spec("vllm") else "no (the end-to-end stage samples with the transformers backend)"))
if missing:
    print(f"MISSING Python packages: {', '.join(missing)} -- the stages that need them are skipped; "
          "carry them as wheels (add them to benchmarks/fetch_wheels.sh)")
unmet = []
for dist in ("trl", "datasets", "peft", "pydantic", "accelerate", "datasketch"):
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        continue
    for line in reqs:
        r = Requirement(line)
        if r.marker is not None and not r.marker.evaluate({"extra": ""}):
            continue
        try:
            v = md.version(r.name)
        except md.PackageNotFoundError:
            unmet.append(f"{dist} needs {r} (missing)")
            continue
        if r.specifier and not r.specifier.contains(v, prereleases=True):
            unmet.append(f"{dist} needs {r}, here {v}")
print("version needs unmet: " + ("; ".join(unmet) if unmet else "none"))
PY

left=$((BUDGET - SECONDS - 5))
echo "setup took ${SECONDS}s; gpu_check.py gets ${left}s"
exec timeout -k 5 "$left" "$PY" benchmarks/gpu_check.py --budget $((left - 20)) "$@"
