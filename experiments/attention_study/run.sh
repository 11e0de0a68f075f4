#!/usr/bin/env bash
# The attention ablation study, end to end, on this machine's CPU (or GPU/TPU if jax has one):
#   bash experiments/attention_study/run.sh OUT
# 1. pretrains one small BERT per variant on the bundled Moby-Dick text (sweep.py), one run after another;
# 2. measures one layer's time and peak memory against sequence length (scaling.py), forward and train;
# 3. writes OUT/report/results.{md,csv} + loss_curves.png and OUT/scaling/{forward,train}/scaling.{md,png}.
# Started again with the same OUT, it skips finished runs and resumes an interrupted one.
set -euo pipefail
OUT=${1:?usage: bash experiments/attention_study/run.sh OUT}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash launch.sh setup
PY=${VENV:-.venv}/bin/python
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STUDY=experiments/attention_study
# One vocabulary and one set of instances for every run: same data, same order. (The vocabulary is trained once
# and passed to every run; train_wordpiece is deterministic, so this saves time rather than differences.)
if [ ! -f "$OUT/vocab/vocab.txt" ]; then
  "$PY" -c 'import sys; from bert_jax.tokenization import train_wordpiece
train_wordpiece(sys.argv[1], vocab_size=6000, lowercase=True).save(sys.argv[2])' data/samples/en_mobydick.txt "$OUT/vocab"
fi
"$PY" -m bert_jax.sweeps run "$STUDY/sweep.py" --root "$OUT" --quiet -- \
  --config.data.vocab="$OUT/vocab" --config.data.data_dir="$OUT/data"
"$PY" "$STUDY/scaling.py" --out "$OUT/scaling/forward" --mode forward --lengths 128,256,512,1024,2048,4096,8192 --memory rss
"$PY" "$STUDY/scaling.py" --out "$OUT/scaling/train" --mode train --lengths 128,256,512,1024,2048,4096 --memory rss
"$PY" -m bert_jax.sweeps report "$STUDY/sweep.py" --root "$OUT"
echo "study done: $OUT/report/results.md, $OUT/scaling/forward/scaling.md, $OUT/scaling/train/scaling.md"
