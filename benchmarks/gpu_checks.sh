#!/usr/bin/env bash
# The GPU checks the issues name, as one script for a session that is lent a GPU machine (DESIGN.md section 3:
# torch, transformers, accelerate, safetensors, numpy, click, tqdm there; no faiss, gguf, diffusers, open_clip).
# Install first:  pip install --no-deps -e .   Then:  bash benchmarks/gpu_checks.sh 2>&1 | tee gpu_checks.log
# Each benchmark prints its figure and the ratio against its peer, measured in the same run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
echo "== fit step (paper shape: batch 1,024 x 1,024 tokens, codebook 16,384, d 576), target >= 1M pairs/s"
timeout 240 $PY benchmarks/bench_fit_step.py --device cuda || echo "bench_fit_step failed ($?)"
echo "== generator training step (SmolLM2-135M shape, seq 1,152), targets >= 350k tokens/s, ~40% MFU, 1.5x Trainer"
timeout 300 $PY benchmarks/bench_generator_step.py --device cuda || echo "bench_generator_step failed ($?)"
echo "== sampling (SmolLM2-135M shape, 64 images x 1,024 tokens with CFG), target <= 10 s"
timeout 240 $PY benchmarks/bench_sample.py --shape smollm2 --device cuda || echo "bench_sample failed ($?)"
