"""The embedded default: pretrain a tiny BERT from scratch on the bundled Moby Dick, on CPU, in minutes.

    python -m bert_jax.main --config=configs/demo.py --workdir=runs/demo

A WordPiece vocabulary is trained on the book first; the book's paragraphs become documents, sentence
pairs become MLM + NSP instances, and a 2-layer BERT trains on them with held-out evaluation,
checkpoints, TensorBoard logs and a loss-curve PNG. Feature extraction with a real checkpoint
(the earlier demo) is configs/embed.py.
"""

from configs import pretrain


def get_config(arg=None):
  del arg
  config = pretrain.get_config("variant=tiny,objective=mlm_nsp")
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
