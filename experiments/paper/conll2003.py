"""CoNLL-2003 NER dev and test F1 (Devlin et al. 2019, Table 7, fine-tuning approach): 3 epochs at 5e-5,
batch 32, each sentence with its document's context, over 5 seeds; selected on dev, test reported beside it.

    python -m bert_jax.paper run experiments/paper/conll2003.py --root runs/paper/conll2003 \
        --model PATH/bert-base-cased --data PATH/conll2003   # eng.train, eng.testa, eng.testb
"""

TITLE = "CoNLL-2003 NER (Devlin et al. 2019)"
REFERENCES = "conll2003"
SIZES = ("base", "large")
COMMON = {"selection": "paper"}


def get_sweep():
  return [{"name": "conll2003", "config": "configs/finetune.py:task=conll2003,seeds=5"}]
