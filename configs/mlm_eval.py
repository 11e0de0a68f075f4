"""Masked-LM accuracy of a checkpoint on pretraining-format TFRecord files (MLPerf BERT's evaluation).

    python -m bert_jax.main --config=configs/mlm_eval.py:mlperf --workdir=runs/mlperf_init \
        --config.init_from=PATH/tf1_ckpt/model.ckpt-28252 --config.model_config=PATH/bert_config.json \
        --config.data.eval_files=PATH/eval_10k

Writes OUT/result.json with masked_lm_accuracy (docs/mlperf.md). The argument `mlperf` sets what MLPerf's
reference computes: its modeling.py evaluates "gelu" as the tanh approximation.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, mlperf=False)
  config = ml_collections.ConfigDict()
  config.job = "mlm_eval"
  # A Google TF checkpoint folder or prefix (.../model.ckpt-28252), a HuggingFace or bert_jax folder, hf://ORG/NAME.
  config.init_from = ""
  # The checkpoint's bert_config.json / config.json when it is not beside the weights; empty: the folder's own.
  config.model_config = ""
  # Changes to the checkpoint's own model config; empty strings keep the checkpoint's values.
  config.model = ml_collections.ConfigDict()
  config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 | float16
  config.model.param_dtype = "float32"
  # "gelu" (exact, erf) or "gelu_tanh". Google's modeling.py, MLPerf's reference among them, computes the
  # activation it names "gelu" with tanh; HuggingFace and bert_jax read that name as the exact GELU.
  config.model.hidden_act = "gelu_tanh" if arg.mlperf else ""
  config.model.attention = "dense"
  config.data = ml_collections.ConfigDict()
  # TFRecord files of tf.train.Examples as BERT's create_pretraining_data.py writes them: comma-separated
  # paths or glob patterns, read in the order given (each pattern's matches sorted).
  config.data.eval_files = ""
  config.data.compression = "auto"  # auto | none | gzip | zlib
  config.batch_size = 8  # global: split over the mesh's data x fsdp devices
  config.max_examples = 10_000 if arg.mlperf else 0  # 0: every record; MLPerf scores eval_10k's 10,000
  config.mesh = common.mesh_config("dp")
  config.lock()
  return config
