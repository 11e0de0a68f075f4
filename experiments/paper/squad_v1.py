"""SQuAD v1.1 dev EM/F1 (Devlin et al. 2019, Table 2), BERT-base or BERT-large: 3 epochs at 5e-5, batch 32,
sequence 384, stride 128, over 5 seeds.

    python -m bert_jax.paper run experiments/paper/squad_v1.py --root runs/paper/squad_v1 \
        --model PATH/bert-base-uncased --data PATH/squad   # train-v1.1.json, dev-v1.1.json
"""

TITLE = "SQuAD v1.1 dev (Devlin et al. 2019)"
REFERENCES = "squad_v1"
SIZES = ("base", "large")
COMMON = {"selection": "paper"}


def get_sweep():
  return [{"name": "squad1", "config": "configs/finetune.py:task=squad1,seeds=5"}]
