"""The embedded default: pretrain a tiny BERT from scratch on the bundled Moby Dick, fine-tune it on the
bundled movie-sentence sentiment sample, and predict, all on CPU, in minutes.

    python -m bert_jax.main --config=configs/demo.py --workdir=runs/demo

Stage `pretrain` (runs/demo/pretrain): a WordPiece vocabulary is trained on the book; its paragraphs
become documents, sentence pairs become MLM + NSP instances, and a 2-layer BERT trains on them with
held-out evaluation, checkpoints, TensorBoard logs and a loss-curve PNG; the model is exported.
Stage `finetune` (runs/demo/finetune): that model, with a classifier head, fine-tunes on 2,114 real
Rotten Tomatoes sentences labelled pos/neg and is evaluated on 528 others after every epoch; the best
epoch is exported. Last, the fine-tuned model labels a few sentences (runs/demo/predictions.jsonl).

Override a stage's fields as --config.pretrain.total_steps=200 or --config.finetune.epochs=1.
Feature extraction with a real checkpoint is configs/embed.py.
"""

import ml_collections

from configs import finetune, pretrain


def pretrain_config():
  # optax's AdamW: the demo's figures in the README were measured with it.
  config = pretrain.get_config("variant=tiny,objective=mlm_nsp,optimizer=adamw")
  config.unlock()
  config.data.source = "data/samples/en_mobydick.txt"
  config.data.format = "paragraphs"
  config.data.vocab_size = 6000
  config.data.max_seq_length = 64
  config.data.masking.max_predictions = 10
  config.data.dupe_factor = 3
  config.data.validation = 0.03
  config.batch_size = 64
  config.total_steps = 1000
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 100
  config.log_every = 100
  config.eval_every = 250
  config.eval_batches = 20
  config.checkpoint_every = 250
  config.lock()
  return config


def finetune_config():
  config = finetune.get_config("task=classification")
  config.unlock()
  config.init_from = "{stage:pretrain}"
  config.data.train = "data/samples/sentiment_movie_rt.train.jsonl"
  config.data.validation = "data/samples/sentiment_movie_rt.validation.jsonl"
  config.data.max_seq_length = 64
  # A model this small, pretrained on one novel, needs a larger step than BERT-base's 2e-5.
  config.optimizer.learning_rate = 1e-4
  config.epochs = 3
  config.log_every = 22
  config.lock()
  return config


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.job = "stages"
  config.stages = ["pretrain", "finetune"]
  config.pretrain = pretrain_config()
  config.finetune = finetune_config()
  config.predict = ml_collections.ConfigDict(
    dict(
      texts=(
        "A gorgeous, moving film with a wonderful cast.",
        "Dull, lifeless and far too long.",
        "The plot is thin but the performances are great fun.",
      )
    )
  )
  config.lock()
  return config
