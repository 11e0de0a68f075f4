#!/usr/bin/env bash
# The paper-table commands on this project's CPU machines, with the one real checkpoint the project can install
# (all-MiniLM-L6-v2) and data made from ../shared/data (prepare.py). Short runs, labelled as what they are.
#
#   bash experiments/paper_local/run.sh SHARED_DATA_DIR OUT [squad] [mnli]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
shared=${1:?SHARED_DATA_DIR}; out=${2:?OUT}; shift 2
which=("$@"); [ ${#which[@]} -gt 0 ] || which=(squad mnli)
PY=${PY:-.venv/bin/python}
MODEL=$("$PY" -c "from bert_jax.embed import bundled_minilm_path; print(bundled_minilm_path())")
"$PY" experiments/paper_local/prepare.py "$shared" "$out/data"
for w in "${which[@]}"; do
  case "$w" in
    squad)  # SQuAD v1.1 table: 3,000 training questions of articles 0-35, all 2,446 of articles 36-47
      "$PY" -m bert_jax.paper run experiments/paper/squad_v1.py --root "$out/squad_v1" --model "$MODEL" \
        --data "$out/data/squad1" --seeds 1 --any_model -- --config.data.max_train_examples=3000 \
        --config.data.max_seq_length=256 --config.epochs=2 --config.optimizer.learning_rate=1e-4 ;;
    mnli)  # GLUE table, MNLI row, on VitaminC pairs written as GLUE's MNLI files: 2 seeds at 5e-5, 1 at 2e-4
      "$PY" -m bert_jax.paper run experiments/paper/bert_base_glue.py --root "$out/glue" --model "$MODEL" \
        --data "$out/data/glue" --seeds 2 --only mnli --any_model -- --config.data.max_train_examples=12000 \
        --config.epochs=1 --config.learning_rates=5e-5
      "$PY" -m bert_jax.paper run experiments/paper/bert_base_glue.py --root "$out/glue_lr2e-4" --model "$MODEL" \
        --data "$out/data/glue" --seeds 1 --only mnli --any_model -- --config.data.max_train_examples=12000 \
        --config.epochs=1 --config.learning_rates=2e-4 ;;
    *) echo "unknown run '$w' (squad or mnli)" >&2; exit 2 ;;
  esac
done
