#!/usr/bin/env bash
# One command for a GPU machine: installs the carried wheelhouse (.whl, built by scripts/gpu_wheelhouse.sh) where
# genvs_ns is not importable yet, then runs scripts/gpu_smoke.py (JSON on stdout, exit 1 if a check failed). With
# $OUT set (the device tool's output folder) the JSON is also written there. On a CPU machine the GPU checks are
# skipped and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c "import genvs_ns, nerfstudio" 2>/dev/null; then
    test -d .whl || { echo "gpu_smoke: genvs_ns is not installed and there is no .whl wheelhouse" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    export PATH=/tmp/site/bin:$PATH
fi
status=0
"$PY" scripts/gpu_smoke.py "$@" > /tmp/gpu_smoke.json || status=$?
cat /tmp/gpu_smoke.json
if [ -n "${OUT:-}" ]; then cp /tmp/gpu_smoke.json "$OUT/gpu_smoke.json"; fi
exit $status
