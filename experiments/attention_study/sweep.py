"""The attention ablation study: one small BERT pretrained with MLM on the bundled Moby-Dick text, once per
variant, everything else equal (data, order, steps, learning rate, seed).

    python -m bert_jax.sweeps run experiments/attention_study/sweep.py --root OUT -- \
        --config.data.vocab=OUT/vocab --config.data.data_dir=OUT/data
    python -m bert_jax.sweeps report experiments/attention_study/sweep.py --root OUT

(`bash experiments/attention_study/run.sh OUT` does both and the scaling benchmark.) The model is 4 layers,
hidden 128, 4 heads of 32, sequence 128 with documents packed into full rows, so every variant also meets
packed-segment boundaries. Local attention sees 16 tokens on each side. Scale the same study up with
`--config.*` extras (for example a larger model, `--config.data.source` pointing at real pretraining text and
more steps) and `python -m bert_jax.sweeps print ... --launcher tpu NAME ZONE` for a pod.
"""

CONFIG = "configs/pretrain.py:variant=L-4_H-128_A-4,objective=mlm,optimizer=adamw"

COMMON = {
  "data.source": "data/samples/en_mobydick.txt",
  "data.format": "paragraphs",
  "data.vocab_size": 6000,
  "data.max_seq_length": 128,
  "data.packing": True,
  "data.dupe_factor": 2,
  "data.validation": 0.03,
  "data.masking.max_predictions": 20,
  "batch_size": 32,
  "total_steps": 300,
  "optimizer.learning_rate": 1e-3,
  "optimizer.warmup_steps": 30,
  "log_every": 20,
  "eval_every": 100,
  "eval_batches": 20,
  "checkpoint_every": 100,
}

_WINDOW = {"model.attention_window": 16}
# GeGLU has three MLP matrices instead of two: 2/3 of the width keeps the parameter count equal.
_GEGLU = {"model.gated_mlp": True, "model.mlp_dim": 344}


def get_sweep():
  return [
    {"name": "bert"},  # learned absolute positions, dense attention, post-LN, GELU MLP
    {"name": "chunked_kernel", "model.attention_kernel": "chunked", "model.attention_block_size": 32},
    {"name": "sinusoidal", "model.position_encoding": "sinusoidal"},
    # Vaswani's sqrt(hidden) on the word embeddings, so the +-1 sinusoids do not swamp them.
    {"name": "sinusoidal_scaled", "model.position_encoding": "sinusoidal", "model.scale_embeddings": True},
    {"name": "t5_buckets", "model.position_encoding": "t5"},
    {"name": "rope", "model.position_encoding": "rope"},
    {"name": "alibi", "model.position_encoding": "alibi"},
    {"name": "no_positions", "model.position_encoding": "none"},
    {"name": "local", "model.attention": "local", **_WINDOW},
    {"name": "local_global", "model.attention": "local_global", "model.global_every": 3, **_WINDOW},
    {"name": "mqa", "model.num_kv_heads": 1},
    {"name": "gqa2", "model.num_kv_heads": 2},
    {"name": "linear", "model.attention": "linear"},
    {"name": "pre_ln", "model.norm_position": "pre"},
    {"name": "geglu", **_GEGLU},
    {
      "name": "modernbert_like",
      "model.position_encoding": "rope",
      "model.attention": "local_global",
      "model.global_every": 3,
      "model.norm_position": "pre",
      **_WINDOW,
      **_GEGLU,
    },
  ]
