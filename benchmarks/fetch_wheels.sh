#!/usr/bin/env bash
# Download, HERE (with network), the wheels benchmarks/gpu_check.sh installs on the device
# machine (Python 3.12, x86-64, no network), into ./.whl, which git ignores via
# .git/info/exclude. Only what the device image lacks, at the versions evalign's own
# environment has (.venv). A few MB in all (a call carries at most 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
mapfile -t pkgs < <("$PY" - <<'PYEOF'
import importlib.metadata as md
for name in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
             "trl", "datasets", "dill", "multiprocess", "datasketch"):
    print(f"{name}=={md.version(name)}")
PYEOF
)
for p in "${pkgs[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$p"
done
ls -la .whl
du -sh .whl
