#!/usr/bin/env bash
# The real-data fine-tuning experiments of experiments/finetune_real/README.md, one after another.
#   bash experiments/finetune_real/run.sh SHARED_DATA_DIR OUT_DIR [squad|ner|pos ...]
# Needs the project's .venv (bash launch.sh setup). Each run writes OUT_DIR/<name>/ (metrics.jsonl,
# result.json, export/) and OUT_DIR/<name>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
shared=${1:?shared data dir}; out=${2:?output dir}; shift 2
which=("$@"); [ ${#which[@]} -gt 0 ] || which=(squad ner pos)
PY=.venv/bin/python
MINILM=$($PY -c "from bert_jax.embed import bundled_minilm_path; print(bundled_minilm_path())")
mkdir -p "$out"
$PY experiments/finetune_real/prepare.py "$shared" "$out/data"
main() { local name=$1; shift; echo "== $name"; /usr/bin/time -v $PY -m bert_jax.main --workdir="$out/$name" "$@" > "$out/$name.log" 2>&1; grep -E "^eval|^done" "$out/$name.log"; }

for task in "${which[@]}"; do
  case "$task" in
    squad)  # all-MiniLM-L6-v2 on 3,000 questions of 36 dev articles; evaluated on all 2,446 of the other 12
      main squad --config=configs/finetune.py:task=span --config.init_from="$MINILM" \
        --config.data.train="$out/data/squad_train.json" --config.data.validation="$out/data/squad_eval.json" \
        --config.data.max_seq_length=256 --config.data.max_train_examples=3000 \
        --config.epochs=2 --config.batch_size=32 --config.optimizer.learning_rate=1e-4 ;;
    ner)  # Chinese: a WordPiece vocabulary and a 2-layer BERT (tiny) pretrained on People's Daily text, then NER
      main ner_pretrain --config=configs/pretrain.py:variant=tiny,objective=mlm \
        --config.data.source="$shared/text/zh_peoples_daily_199801.txt" --config.data.format=lines \
        --config.data.packing=True --config.data.vocab_size=8000 --config.data.vocab_limit_alphabet=6000 --config.data.lowercase=False \
        --config.data.max_seq_length=128 --config.data.dupe_factor=2 --config.data.masking.max_predictions=20 \
        --config.data.validation=0.01 --config.batch_size=64 --config.total_steps=1200 \
        --config.optimizer.learning_rate=1e-3 --config.optimizer.warmup_steps=120 \
        --config.log_every=200 --config.eval_every=600 --config.eval_batches=10 --config.checkpoint_every=600
      main ner --config=configs/finetune.py:task=tagging --config.init_from="$out/ner_pretrain" \
        --config.data.train="$out/data/ner_zh_train.jsonl" --config.data.validation="$out/data/ner_zh_valid.jsonl" \
        --config.data.tag_scheme=iob2 --config.data.max_seq_length=256 --config.data.max_train_examples=6000 \
        --config.epochs=2 --config.batch_size=32 --config.optimizer.learning_rate=1e-3 ;;
    pos)  # all-MiniLM-L6-v2, one epoch over 4,000 Brown sentences; tag accuracy on 2,000 held-out ones
      main pos --config=configs/finetune.py:task=tagging --config.init_from="$MINILM" \
        --config.data.train="$out/data/pos_brown_train.jsonl" --config.data.validation="$out/data/pos_brown_valid.jsonl" \
        --config.data.max_seq_length=96 --config.data.max_train_examples=4000 --config.data.max_eval_examples=2000 \
        --config.metric=token_accuracy --config.best_metric=eval/token_accuracy \
        --config.epochs=1 --config.batch_size=32 --config.optimizer.learning_rate=1e-4 ;;
    *) echo "unknown experiment $task (squad, ner, pos)" >&2; exit 2 ;;
  esac
done
