#!/usr/bin/env bash
# The accelerator run of issue 7, prepared to run once on a GPU machine (for example the H200 the
# project's `device` tool lends to some tasks): BERT-large and BERT-base MLM training steps and forward
# passes at sequence 128 and 512, bfloat16 compute with float32 parameters, attention through
# jax.nn.dot_product_attention (cuDNN; training with attention dropout falls back to XLA's attention, with a
# log line), MFU against the chip's own bf16 matmul rate measured in the same run (square 1024..8192).
# bert_jax only (the torch peers here are CPU wheels; add hf_flax with --peers when .venv-peers has a CUDA jax).
#
#   PYTHON=/path/to/python-with-jax[cuda] bash experiments/benchmarks/gpu.sh OUT
#
# Parts run in order of importance, each its own bench.py run, so a run cut short keeps the parts before:
#   smoke        a 2-layer model, forward and train, seconds: fails fast if the GPU's jax breaks something
#   train_large  BERT-large pretraining step at 512 and 128 tokens (the goal: >= 50% MFU at 512), scanned and not
#   train_base   BERT-base pretraining step
#   forward      BERT-base and BERT-large inference
# No part starts after GPU_BUDGET_S seconds from the script's start (default 420; give the device call's
# timeout about 2 minutes more, for the last part started). Results: OUT/PART.md (each part's table),
# OUT/gpu_results.tar.gz (every part's results.md/.json, plot and worker logs), OUT/nvidia-smi.txt: few files,
# as the device tool returns at most 8.
#
# On this project's device machine (an image with a CUDA jax, no network): the Python packages the image lacks
# travel as wheels in .whl/ (made here by `bash experiments/benchmarks/gpu_wheels.sh`), which this script
# installs to a scratch folder when .whl/ holds any. The device call: carry [".whl"], command
# `PYTHON=python3 bash experiments/benchmarks/gpu.sh $OUT`, timeout about 540 s.
set -euo pipefail
OUT=${1:?usage: gpu.sh OUT}
PYTHON=${PYTHON:-.venv/bin/python}
BUDGET=${GPU_BUDGET_S:-420}
START=$SECONDS  # the budget counts from here: installing wheels and starting jax included
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # before the cd below: a relative OUT is the caller's
cd "$(dirname "$0")/../.."
SCRATCH=$(mktemp -d)
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SCRATCH/site" .whl/*.whl
  export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PYTHON" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
COMMON=(--jax-platforms "${GPU_PLATFORM:-cuda}" --dtype bfloat16 --attention-kernel dot_product --rounds 3 --iters 10
  --warmup 3)

part() {  # part NAME BENCH_ARGS...: one bench.py run, then everything so far packed into OUT
  local name=$1
  shift
  if ((SECONDS - START > BUDGET)); then
    echo "gpu.sh: $name not started: ${BUDGET}s budget spent" | tee -a "$OUT/skipped.txt"
    return 0
  fi
  echo "gpu.sh: $name (at $((SECONDS - START)) s)"
  if "$PYTHON" experiments/benchmarks/bench.py "${COMMON[@]}" "$@" --out "$SCRATCH/$name" &&
    [ -f "$SCRATCH/$name/results.md" ]; then
    cp "$SCRATCH/$name/results.md" "$OUT/$name.md"
  else
    echo "gpu.sh: $name failed (its worker logs are in gpu_results.tar.gz)" | tee -a "$OUT/failed.txt"
  fi
  # Written aside and renamed: a run killed while packing keeps the previous archive whole.
  tar -czf "$OUT/.gpu_results.tar.gz.tmp" -C "$SCRATCH" --exclude site . && mv "$OUT/.gpu_results.tar.gz.tmp" "$OUT/gpu_results.tar.gz"
}

part smoke --modes forward,train --peers bert_jax --cases "${GPU_SMOKE_CASE:-L-2_H-128_A-2:8x128}"
part train_large --modes train --peers bert_jax_scan,bert_jax --order case-major \
  --cases "${GPU_LARGE_CASES:-large:32x512,large:128x128}"
part train_base --modes train --peers bert_jax --cases "${GPU_BASE_CASES:-base:32x512,base:128x128}"
part forward --modes forward --peers bert_jax \
  --cases "${GPU_FORWARD_CASES:-base:64x128,base:16x512,large:64x128,large:16x512}"
echo "gpu.sh: done in $((SECONDS - START)) s: $OUT"
