#!/usr/bin/env bash
# One prepared GPU check (issues 19 and 20): the step benchmarks, then the real commands end to end, on a bare GPU
# machine (python3 with torch, transformers, accelerate, safetensors, numpy, click; no faiss, gguf, diffusers,
# open_clip or webdataset; no network). Every step runs under its own timeout, prints its exit code and wall time,
# and a failing step does not stop the script. Logs and JSON summaries land in $OUT (default ./gpu-check-out).
#
#   once, on a machine with the default LM:  .venv/bin/python benchmarks/gpu/build_assets.py
#   on the GPU machine:                      bash benchmarks/gpu_checks.sh       (carry benchmarks/gpu/assets)
#   one part again:                          ONLY=pipeline bash benchmarks/gpu_checks.sh
#   CPU rehearsal (faiss etc. blocked):      bash benchmarks/gpu/rehearse.sh     (SMALL=1, device cpu)
#
# Knobs (environment): ONLY (sections, run in the order given: info,bench,pipeline,pytest), SMALL=1 (tiny sizes,
# device cpu), PY (python, default python3), DEVICE, OUT, WORK (scratch; default a new /tmp folder, removed at the
# end unless KEEP_WORK=1), BUDGET_S (seconds for the whole script; a step's timeout is cut to what is left), the
# BENCH_*_FLAGS strings, the pipeline sizes and the T_* timeouts below, PYTEST_PYLIB=1 (the carried pytest).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SMALL=${SMALL:-0}
PY=${PY:-${PYTHON:-python3}}
ONLY=${ONLY:-info,bench,pipeline,pytest}
OUT=${OUT:-$ROOT/gpu-check-out}
if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d /tmp/tokalign-gpu.XXXXXX); OWN_WORK=1; else OWN_WORK=0; fi
ASSETS=${ASSETS:-$ROOT/benchmarks/gpu/assets/smollm2-shape}

if [ "$SMALL" = 1 ]; then
  DEVICE=${DEVICE:-cpu}
  BUDGET_S=${BUDGET_S:-1200}
  # Step benchmarks, reduced (other sessions change these scripts: adjust the flags here).
  BENCH_FIT_FLAGS=${BENCH_FIT_FLAGS:-"--device $DEVICE --batch 256 --steps 1 --rounds 1 --no-naive --threads 1"}
  BENCH_GEN_FLAGS=${BENCH_GEN_FLAGS:-"--device $DEVICE --layers 2 --seq-len 320 --image-tokens 256 --micro-batch 1 --batch 2 --steps 2 --warmup 1"}
  BENCH_SAMPLE_FLAGS=${BENCH_SAMPLE_FLAGS:-"--shape tiny --device $DEVICE --images 2 --grid 8 --repeats 1"}
  LM_LAYERS=${LM_LAYERS:-2}          # decoder layers of the random-weight LM folder
  ITEMS=${ITEMS:-2000}; GRID=${GRID:-16}; CODEBOOK=${CODEBOOK:-16384}
  FIT_STEPS=${FIT_STEPS:-20}; FIT_BATCH=${FIT_BATCH:-256}; FIT_HOLDOUT=${FIT_HOLDOUT:-256}
  GEN_STEPS=${GEN_STEPS:-2}; GEN_SEQ=${GEN_SEQ:-320}; GEN_MICRO=${GEN_MICRO:-1}; GEN_BATCH_TOKENS=${GEN_BATCH_TOKENS:-640}
  GEN_FLAGS=${GEN_FLAGS:-"--holdout 32 --eval-batches 1"}
  SAMPLE_N=${SAMPLE_N:-2}; SAMPLE_BATCH=${SAMPLE_BATCH:-2}
  T_BENCH_FIT=${T_BENCH_FIT:-150}; T_BENCH_GEN=${T_BENCH_GEN:-240}; T_BENCH_SAMPLE=${T_BENCH_SAMPLE:-150}
  T_LM=${T_LM:-120}; T_INPUTS=${T_INPUTS:-60}; T_TOKENIZE=${T_TOKENIZE:-120}; T_FIT=${T_FIT:-180}
  T_EXPORT=${T_EXPORT:-90}; T_TRAIN=${T_TRAIN:-300}; T_SAMPLE=${T_SAMPLE:-180}; T_PYTEST=${T_PYTEST:-300}
else
  DEVICE=${DEVICE:-cuda}
  BUDGET_S=${BUDGET_S:-345}
  BENCH_FIT_FLAGS=${BENCH_FIT_FLAGS:-"--device $DEVICE"}
  BENCH_GEN_FLAGS=${BENCH_GEN_FLAGS:-"--device $DEVICE"}
  BENCH_SAMPLE_FLAGS=${BENCH_SAMPLE_FLAGS:-"--shape smollm2 --device $DEVICE --quick"}
  LM_LAYERS=${LM_LAYERS:-}           # empty: all 30
  ITEMS=${ITEMS:-20000}; GRID=${GRID:-32}; CODEBOOK=${CODEBOOK:-16384}
  FIT_STEPS=${FIT_STEPS:-300}; FIT_BATCH=${FIT_BATCH:-1024}; FIT_HOLDOUT=${FIT_HOLDOUT:-1024}
  GEN_STEPS=${GEN_STEPS:-30}; GEN_SEQ=${GEN_SEQ:-1152}; GEN_MICRO=${GEN_MICRO:-16}; GEN_BATCH_TOKENS=${GEN_BATCH_TOKENS:-73728}
  GEN_FLAGS=${GEN_FLAGS:-"--holdout 256 --eval-batches 1"}
  SAMPLE_N=${SAMPLE_N:-64}; SAMPLE_BATCH=${SAMPLE_BATCH:-64}
  T_BENCH_FIT=${T_BENCH_FIT:-45}; T_BENCH_GEN=${T_BENCH_GEN:-120}; T_BENCH_SAMPLE=${T_BENCH_SAMPLE:-80}
  T_LM=${T_LM:-30}; T_INPUTS=${T_INPUTS:-20}; T_TOKENIZE=${T_TOKENIZE:-30}; T_FIT=${T_FIT:-45}
  T_EXPORT=${T_EXPORT:-20}; T_TRAIN=${T_TRAIN:-120}; T_SAMPLE=${T_SAMPLE:-60}; T_PYTEST=${T_PYTEST:-60}
fi
FIT_FLAGS=${FIT_FLAGS:-}             # extra flags for `fit`
SAMPLE_FLAGS=${SAMPLE_FLAGS:-}       # extra flags for `generator sample`
CFG=${CFG:-3}

# ---------------------------------------------------------------- set-up
mkdir -p "$OUT/logs" "$OUT/json" "$WORK/pkg/tokalign" "$WORK/cache"
exec > >(tee -a "$OUT/gpu_checks.log") 2>&1   # everything printed is also in $OUT/gpu_checks.log
for part in align generate probes cli; do ln -sfn "$ROOT/$part" "$WORK/pkg/tokalign/$part"; done
export PYTHONPATH="$WORK/pkg:$ROOT/tests/helpers${PYTHONPATH:+:$PYTHONPATH}"
export TOKALIGN_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1
TOKALIGN=("$PY" -m tokalign.cli.main)
START=$(date +%s)
STEPS_TSV="$OUT/steps.tsv"
[ -f "$STEPS_TSV" ] || printf 'step\trc\twall_s\n' > "$STEPS_TSV"
echo "gpu_checks: SMALL=$SMALL DEVICE=$DEVICE ONLY=$ONLY BUDGET_S=$BUDGET_S PY=$PY WORK=$WORK OUT=$OUT"

# step NAME TIMEOUT CMD...: run CMD under min(TIMEOUT, what the budget has left); log to $OUT/logs/NAME.log.
step() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 5 ]; then
    echo "== [$name] SKIPPED: the ${BUDGET_S}s budget is spent"; printf '%s\tskipped\t0\n' "$name" >> "$STEPS_TSV"
    return 99
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== [$name] (timeout ${limit}s) $*"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/logs/$name.log"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  case $rc in
    0) echo "== [$name] ok, wall ${wall}s" ;;
    124|137) echo "== [$name] TIMED OUT after ${limit}s (exit $rc), wall ${wall}s" ;;
    *) echo "== [$name] FAILED with exit code $rc, wall ${wall}s" ;;
  esac
  printf '%s\t%s\t%s\n' "$name" "$rc" "$wall" >> "$STEPS_TSV"
  return "$rc"
}

# need NAME PATH...: skip step NAME (with a line) unless every PATH exists.
need() {
  local name=$1; shift
  for path in "$@"; do
    if [ ! -e "$path" ]; then
      echo "== [$name] SKIPPED: $path is missing (an earlier step failed)"
      printf '%s\tskipped\t0\n' "$name" >> "$STEPS_TSV"
      return 1
    fi
  done
}

# ---------------------------------------------------------------- sections
section_info() {
  echo "######## info"
  date -u '+date: %Y-%m-%dT%H:%M:%SZ' | tee "$OUT/logs/info.log"
  (git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/commit: /'; \
   git -C "$ROOT" status --short 2>/dev/null | head -50 | sed 's/^/  dirty: /') | tee -a "$OUT/logs/info.log"
  (nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 \
     || echo "nvidia-smi: none") | sed 's/^/gpu: /' | tee -a "$OUT/logs/info.log"
  timeout 60 "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/logs/info.log"
import importlib, platform, os
print("python:", platform.python_version(), "| cpus:", os.cpu_count())
for name in ("torch", "transformers", "accelerate", "safetensors", "numpy", "triton", "pytest", "faiss", "gguf",
             "diffusers", "open_clip", "webdataset", "matplotlib"):
    try:
        print(f"{name}: {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as exc:
        print(f"{name}: absent ({type(exc).__name__})")
import torch
print("cuda:", torch.version.cuda, "| available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
}

section_bench() {
  echo "######## bench (step benchmarks; flags: BENCH_FIT_FLAGS, BENCH_GEN_FLAGS, BENCH_SAMPLE_FLAGS; 'skip' skips one)"
  # shellcheck disable=SC2086
  [ "$BENCH_FIT_FLAGS" = skip ] || step bench_fit_step "$T_BENCH_FIT" "$PY" benchmarks/bench_fit_step.py $BENCH_FIT_FLAGS
  # shellcheck disable=SC2086
  [ "$BENCH_GEN_FLAGS" = skip ] ||
    step bench_generator_step "$T_BENCH_GEN" "$PY" benchmarks/bench_generator_step.py $BENCH_GEN_FLAGS
  # shellcheck disable=SC2086
  [ "$BENCH_SAMPLE_FLAGS" = skip ] || step bench_sample "$T_BENCH_SAMPLE" "$PY" benchmarks/bench_sample.py $BENCH_SAMPLE_FLAGS
}

section_pipeline() {
  echo "######## pipeline (tokenize -> fit -> export -> generator train -> generator sample, device $DEVICE)"
  local lm=$WORK/lm corpus=$WORK/corpus run=$WORK/fit init=$WORK/generator_init.safetensors gen=$WORK/gen
  local samples=$WORK/samples
  rm -rf "$lm" "$WORK/inputs" "$corpus" "$run" "$init" "$gen" "$samples"
  if [ ! -f "$ASSETS/config.json" ]; then
    echo "== [make_lm] SKIPPED: $ASSETS/config.json is missing: run benchmarks/gpu/build_assets.py here and carry" \
         "benchmarks/gpu/assets"
    printf 'make_lm\tskipped\t0\n' >> "$STEPS_TSV"
  else
    step make_lm "$T_LM" "$PY" benchmarks/gpu/make_inputs.py lm --assets "$ASSETS" --out "$lm" \
      ${LM_LAYERS:+--layers "$LM_LAYERS"}
  fi
  step make_corpus_inputs "$T_INPUTS" "$PY" benchmarks/gpu/make_inputs.py corpus --out "$WORK/inputs" \
    --items "$ITEMS" --grid "$GRID" --codebook "$CODEBOOK"
  need tokenize "$lm/config.json" "$WORK/inputs/tokens.npy" &&
    step tokenize "$T_TOKENIZE" "${TOKALIGN[@]}" tokenize --input "$WORK/inputs/tokens.npy" \
      --captions "$WORK/inputs/tokens.jsonl" --out "$corpus" --image-tokenizer pretokenized \
      --image-tokenizer-path "$WORK/inputs/codebook.safetensors" --lm "$lm" --no-progress
  # shellcheck disable=SC2086
  need fit "$corpus/manifest.json" &&
    step fit "$T_FIT" "${TOKALIGN[@]}" fit --corpus "$corpus" --run "$run" --lm "$lm" --device "$DEVICE" \
      --steps "$FIT_STEPS" --batch-size "$FIT_BATCH" --holdout "$FIT_HOLDOUT" --checkpoint-every "$FIT_STEPS" \
      --no-progress $FIT_FLAGS
  need export "$run/table.safetensors" &&
    step export "$T_EXPORT" "${TOKALIGN[@]}" export --run "$run" --to generator-init --out "$init"
  # shellcheck disable=SC2086
  need generator_train "$init" &&
    step generator_train "$T_TRAIN" "${TOKALIGN[@]}" generator train --corpus "$corpus" --run "$gen" --lm "$lm" \
      --init aligned --init-from "$init" --device "$DEVICE" --steps "$GEN_STEPS" --batch-tokens "$GEN_BATCH_TOKENS" \
      --seq-len "$GEN_SEQ" --micro-batch "$GEN_MICRO" --warmup-steps 2 --eval-every "$GEN_STEPS" \
      --checkpoint-every "$GEN_STEPS" --no-progress $GEN_FLAGS
  # shellcheck disable=SC2086
  need generator_sample "$gen/model" &&
    step generator_sample "$T_SAMPLE" "${TOKALIGN[@]}" generator sample --model "$gen/model" \
      --prompt "a large red circle in the center" -n "$SAMPLE_N" --batch-size "$SAMPLE_BATCH" --cfg-scale "$CFG" \
      --device "$DEVICE" --seed 0 --out "$samples" --no-progress $SAMPLE_FLAGS
  timeout 60 "$PY" benchmarks/gpu/summarize.py --work "$WORK" --out "$OUT" 2>&1 | tee "$OUT/logs/summary.log"
}

section_pytest() {
  echo "######## pytest -m gpu"
  # The machine's own pytest, else the copy build_assets.py carries (PYTEST_PYLIB=1: always the carried one).
  local pylib=${PYLIB:-$ROOT/benchmarks/gpu/assets/pylib} path=$PYTHONPATH
  if [ "${PYTEST_PYLIB:-auto}" = 1 ] || ! "$PY" -c "import pytest" 2>/dev/null; then
    path="$pylib:$PYTHONPATH"
  fi
  if ! PYTHONPATH="$path" "$PY" -c "import pytest; print('pytest', pytest.__version__, 'from', pytest.__file__)"; then
    echo "== [pytest_gpu] SKIPPED: no pytest for $PY (nor a usable carried copy in $pylib)"
    printf 'pytest_gpu\tskipped\t0\n' >> "$STEPS_TSV"
    return
  fi
  # Only the files that mark tests gpu: collecting the whole suite would import what this machine lacks.
  local files
  mapfile -t files < <(grep -rlE --include='test_*.py' 'mark\.gpu|pytestmark.*gpu' tests | sort)
  if [ "${#files[@]}" -eq 0 ]; then
    echo "== [pytest_gpu] SKIPPED: no test file marks tests gpu"; printf 'pytest_gpu\tskipped\t0\n' >> "$STEPS_TSV"
    return
  fi
  PYTHONPATH="$path" step pytest_gpu "$T_PYTEST" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider \
    --junitxml="$OUT/json/pytest_gpu.xml" "${files[@]}"
  [ $? -eq 5 ] && echo "== [pytest_gpu] exit 5: no test selected by -m gpu in ${files[*]}"
}

IFS=',' read -r -a sections <<< "$ONLY"
for section in "${sections[@]}"; do
  case $section in
    info|bench|pipeline|pytest) "section_$section" ;;
    *) echo "unknown section '$section' in ONLY (use info, bench, pipeline, pytest)" ;;
  esac
done

echo "######## recap: the benchmarks' last lines (full logs in $OUT/logs)"
for name in bench_fit_step bench_generator_step bench_sample; do
  [ -f "$OUT/logs/$name.log" ] && { echo "-- $name"; grep -v '^\s*$' "$OUT/logs/$name.log" | tail -n 18 | cut -c1-220; }
done
[ -f "$OUT/logs/summary.log" ] && cat "$OUT/logs/summary.log"
echo "######## steps (exit code 124/137: timed out)"
column -t -s $'\t' "$STEPS_TSV" 2>/dev/null || cat "$STEPS_TSV"
echo "total wall $(($(date +%s) - START)) s; logs and JSON in $OUT"
if [ "$OWN_WORK" = 1 ] && [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; else echo "scratch kept in $WORK"; fi
sleep 1  # lets the log's tee catch up
