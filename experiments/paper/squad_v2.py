"""SQuAD v2.0 dev EM/F1 (Devlin et al. 2019, Table 3; BERT-large only): 2 epochs at 5e-5, batch 48, the
no-answer threshold tuned on dev (eval/best_exact, eval/best_f1), over 5 seeds.

    python -m bert_jax.paper run experiments/paper/squad_v2.py --root runs/paper/squad_v2 \
        --model PATH/bert-large-uncased --data PATH/squad   # train-v2.0.json, dev-v2.0.json
"""

TITLE = "SQuAD v2.0 dev (Devlin et al. 2019)"
REFERENCES = "squad_v2"
SIZES = ("large",)
COMMON = {"selection": "paper"}


def get_sweep():
  return [{"name": "squad2", "config": "configs/finetune.py:task=squad2,seeds=5"}]
