"""MLPerf training BERT: the masked-LM accuracy of a checkpoint on MLPerf's evaluation set (eval_10k, 10,000
sequences of 512 with up to 76 masked positions). MLPerf's initial checkpoint (model.ckpt-28252, a TF checkpoint
read without TensorFlow) should score about 0.34085; a submission trains until 0.720.

    python -m bert_jax.paper run experiments/paper/mlperf_bert.py --root runs/paper/mlperf \
        --model PATH/tf1_ckpt --data PATH/eval_10k -- --config.model_config=PATH/bert_config.json

MLPerf keeps bert_config.json beside its tf1_ckpt/ folder, not in it: config.model_config names it, for the job
and for the table's check of the model's size alike.

The job is configs/mlm_eval.py (bert_jax.main writes WORKDIR/result.json with "masked_lm_accuracy").
"""

TITLE = "MLPerf training BERT: masked-LM accuracy of a checkpoint"
REFERENCES = "mlperf_bert"
SIZES = ("large",)
DATA_KEY = "data.eval_files"  # what --data sets
SEEDS = False  # one evaluation, no seeds


def get_sweep():
  return [{"name": "mlm_eval", "config": "configs/mlm_eval.py:mlperf"}]
