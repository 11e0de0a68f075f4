"""Pretraining runs.

    python -m bert_jax.main --config=configs/pretrain.py:variant=base,objective=mlm_nsp --workdir=DIR \
        --config.data.source=/data/wiki/*.txt --config.data.format=bert

Arguments (comma-separated key=value):
  variant     tiny | mini | small | medium | base | large | L-6_H-384_A-12        (default base)
  objective   mlm | mlm_nsp | mlm_sop | electra                                    (default mlm_nsp)
  masking     token | whole_word | span                                            (default token)
  optimizer   bert_adamw (BERT's: no bias correction, BERT's schedule) | adamw (optax's, linear schedule) |
              lamb                                                                 (default bert_adamw)
  phases      1: one phase at seq 128; 2: BERT's 90% of steps at 128 then 10% at 512
  runlocal    shrink everything for a laptop CPU (tiny sizes, few steps)
Every field below can also be overridden with --config.FIELD=VALUE; the config is locked, so a
misspelled field fails.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(
    arg,
    variant="base",
    objective="mlm_nsp",
    masking="token",
    optimizer="bert_adamw",
    phases=1,
    runlocal=False,
  )
  config = ml_collections.ConfigDict()
  config.job = "pretrain"  # pretrain | build_data (the instances of every phase, then stop)
  config.seed = 0
  config.objective = arg.objective
  config.electra_generator_divisor = 4  # ELECTRA: the generator is this many times narrower

  config.model = common.model_config(arg.variant, vocab_size=0)  # 0: the tokenizer's vocabulary size
  config.mesh = common.mesh_config("dp")

  config.data = ml_collections.ConfigDict()
  config.data.source = ""  # files/globs (comma-separated) or "tfds:NAME[/CONFIG]"
  config.data.format = "bert"  # bert | paragraphs | lines | document (TFDS articles)
  config.data.tfds_split = "train"
  config.data.tfds_data_dir = ""
  config.data.tfds_field = "text"
  config.data.vocab = ""  # a vocab.txt or tokenizer folder; empty: train one on the corpus
  config.data.vocab_size = 30522
  # Characters kept in the trained vocabulary's alphabet (the most frequent first; the rest become [UNK]). 1000
  # covers alphabetic scripts; Chinese or Japanese need one entry per ideograph in use (several thousand).
  config.data.vocab_limit_alphabet = 1000
  config.data.lowercase = True
  config.data.data_dir = ""  # where the array_record instances go; empty: WORKDIR/data
  # Worker processes that build the instances on each host (0: every core); the records are the same for any.
  config.data.workers = 0
  config.data.max_seq_length = 128
  config.data.short_seq_prob = 0.1
  config.data.dupe_factor = 10  # static instances per document (BERT); masks: see dynamic_masking
  config.data.dynamic_masking = False  # True: fresh masks every epoch (RoBERTa)
  config.data.packing = False  # pack short documents into full sequences (no NSP/SOP)
  config.data.validation = 0.01  # held-out fraction (float) or number (int) of documents
  config.data.on_mismatch = "error"  # data_dir built from another config: error | rebuild
  config.data.masking = ml_collections.ConfigDict(
    dict(
      rate=0.15,
      max_predictions=20,
      mode=arg.masking,
      replace_with_mask=0.8,
      replace_with_random=0.1,
      span_p=0.2,
      span_max=10,
    )
  )

  config.batch_size = 256
  config.total_steps = 1_000_000
  # BERT trained 90% of its steps at sequence length 128 and the rest at 512.
  config.phases = []
  if arg.phases == 2:
    config.phases = [
      dict(steps=900_000, max_seq_length=128, batch_size=256, max_predictions=20),
      dict(steps=100_000, max_seq_length=512, batch_size=256, max_predictions=80),
    ]
  elif arg.phases != 1:
    raise ValueError(f"phases={arg.phases}; expected 1 or 2")

  config.optimizer = common.optimizer_config(arg.optimizer)

  config.log_every = 100
  config.eval_every = 10_000
  config.eval_batches = 50  # 0: the whole validation split
  config.checkpoint_every = 10_000
  config.keep_checkpoints = 3
  config.best_metric = "eval/mlm_accuracy"  # empty: keep only the latest
  config.best_mode = "max"
  config.resume = ""  # another run's workdir or checkpoint folder: continue it (state and data)
  config.init_from = ""  # a HuggingFace / Google / bert_jax checkpoint folder: start from its weights
  config.peak_flops_per_device = 0.0  # for MFU; 0: known accelerators only

  if arg.runlocal:
    config.model = common.model_config("tiny", vocab_size=0)
    config.data.vocab_size = 8000
    config.data.dupe_factor = 2
    config.data.validation = 0.02
    config.batch_size = 32
    config.total_steps = 200
    config.phases = []
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 20
    config.log_every = 20
    config.eval_every = 100
    config.eval_batches = 10
    config.checkpoint_every = 100
  config.lock()
  return config
