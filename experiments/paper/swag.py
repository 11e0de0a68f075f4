"""SWAG dev accuracy (Devlin et al. 2019, Table 4): 3 epochs at 2e-5, batch 16, over 5 seeds.

    python -m bert_jax.paper run experiments/paper/swag.py --root runs/paper/swag \
        --model PATH/bert-base-uncased --data PATH/swag   # train.csv, val.csv
"""

TITLE = "SWAG dev (Devlin et al. 2019)"
REFERENCES = "swag"
SIZES = ("base", "large")
COMMON = {"selection": "paper"}


def get_sweep():
  return [{"name": "swag", "config": "configs/finetune.py:task=swag,seeds=5"}]
