#!/usr/bin/env bash
# The accelerator run of issue 7, prepared to run once on a GPU machine (for example the H200 the
# project's `device` tool lends to some tasks): BERT-base and BERT-large, sequence 128 and 512,
# forward and MLM training step, bfloat16 compute with float32 parameters, attention through
# jax.nn.dot_product_attention (cuDNN), MFU against the chip's own measured bf16 matmul rate
# (square 1024..8192 in the same run). bert_jax only (the torch peers here are CPU wheels; add
# hf_flax with --peers when .venv-peers has a CUDA jax).
#
#   PYTHON=/path/to/python-with-jax[cuda] bash experiments/benchmarks/gpu.sh OUT
#
# Needs: a Python with this repository's requirements and a CUDA build of the pinned jax. Writes
# OUT/{forward,train}/results.{md,json} and OUT/nvidia-smi.txt; about 10 minutes on one H200.
set -euo pipefail
OUT=${1:?usage: gpu.sh OUT}
PYTHON=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PYTHON" -c "import jax; print(jax.devices())"
COMMON=(--jax-platforms cuda --dtype bfloat16 --attention-kernel dot_product --rounds 3 --iters 10 --warmup 3)
"$PYTHON" experiments/benchmarks/bench.py "${COMMON[@]}" --modes forward --peers bert_jax \
  --cases base:64x128,base:16x512,large:64x128,large:16x512 --out "$OUT/forward"
# Training: scanned layers (one compiled layer body) and the step the runner uses.
"$PYTHON" experiments/benchmarks/bench.py "${COMMON[@]}" --modes train --peers bert_jax,bert_jax_scan \
  --order case-major --cases base:64x128,base:16x512,large:32x128,large:8x512 --out "$OUT/train"
echo "results: $OUT/forward/results.md $OUT/train/results.md"
