"""BERT-large on GLUE dev (Devlin et al. 2019): the nine tasks, the paper's grid (learning rate 5e-5/4e-5/3e-5/2e-5,
batch 32, 3 epochs, each run evaluated as it ends) over 5 seeds; WNLI reported apart, as the paper did.

For BERT-large the paper ran several random restarts and kept the best on dev for its test submission (the
"best run" column); its dev numbers (Table 6) are the mean of 5 restarts (the "measured" column).

    python -m bert_jax.paper run experiments/paper/bert_large_glue.py --root runs/paper/large_glue \
        --model PATH/bert-large-uncased --data PATH/glue_data
"""

TITLE = "BERT-large, GLUE dev (Devlin et al. 2019)"
REFERENCES = "bert_glue"
SIZES = ("large",)
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
# The paper evaluated each fine-tuned model as it ended (3 epochs) and chose the learning rate on dev.
COMMON = {"selection": "paper"}


def get_sweep():
  return [{"name": t, "config": f"configs/finetune.py:task={t},seeds=5,lr_grid"} for t in TASKS]
