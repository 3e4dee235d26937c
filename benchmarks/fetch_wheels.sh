#!/usr/bin/env bash
# Download, HERE (with network), the wheels benchmarks/gpu_check.sh installs on the GPU box
# (Python 3.12, x86-64, no package index), into ./.whl (ignored by git: .gitignore).
#
#   bash benchmarks/fetch_wheels.sh [--pyarrow]
#
# Only what that box lacks. Its image has torch 2.11, transformers 5.17, accelerate, peft,
# huggingface_hub 1.33, tokenizers, safetensors, numpy, pandas, pyarrow, xxhash, fsspec,
# jinja2, pyyaml, rich, typer, scipy (the device notes' package list); it has no TRL,
# datasets, pydantic or datasketch. Versions are the ones evalign is developed and tested
# with. Needs of these wheels that the box meets are not carried: TRL 1.16 asks for
# transformers>=4.56.2, accelerate>=1.10.1, datasets>=4.7, pandas, pyarrow>=21;
# datasets 5.2 asks for huggingface-hub>=1.31,<3, pyarrow>=24, fsspec<=2026.9.0,
# dill<0.4.2, multiprocess<0.70.20 (carried). peft is carried too: the box's version is
# unknown and gpu_check.sh installs a carried wheel only where the box's copy is missing
# or older. gpu_check.sh prints any need the box then leaves unmet.
#
# About 6 MB in all. --pyarrow adds pyarrow 26 (55 MB: the 64 MiB a device call carries
# then just holds it), for a box whose pyarrow is older than datasets' 24.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pkgs=(
  trl==1.16.0 peft==0.21.2
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  datasketch==2.0.0
)
[[ "${1:-}" == "--pyarrow" ]] && pkgs+=(pyarrow==26.0.1)
rm -rf .whl && mkdir -p .whl  # one version of each: two would stop the install there
for p in "${pkgs[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$p" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  compgen -G ".whl/$(echo "${p%%==*}" | tr - _)-*.whl" >/dev/null || compgen -G ".whl/${p%%==*}-*.whl" >/dev/null \
    || { echo "fetch_wheels: no wheel for $p" >&2; exit 1; }
done
ls -la .whl
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -cb 2>/dev/null | awk '$2=="total"{s+=$1} END{print s+0}')
awk -v w="$whl" -v t="$tree" 'BEGIN{printf ".whl: %.1f MiB; with the working tree (%.1f MiB): %.1f MiB of the 64 MiB a device call carries\n", w/2^20, t/2^20, (w+t)/2^20; exit !((w+t) < 64*2^20)}'
