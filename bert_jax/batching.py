"""Inference over many texts at once (the Predictor, `encode()`, the fine-tuning runner's evaluation): rows
run longest first, each batch padded to its own length bucket.

Padding every batch to the longest text of a call makes a call of short sentences with one long review pay
for the review in every batch. Here rows are sorted by real length (stable, longest first), cut into batches
of `batch_size` rows (the last one padded with empty rows, so every batch has one shape), and each batch is
cut to the smallest power of two >= its longest row (32 at least, the features' width at most): at most
ceil(log2(width / 16)) shapes are ever compiled (5 up to 512). Outputs come back in the rows' own order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np

KEYS = ("input_ids", "attention_mask", "token_type_ids")


def length_buckets(real: np.ndarray, width: int) -> np.ndarray:
  """Per row: the smallest power of two >= its real length, at least 32 and at most `width`."""
  return np.minimum(width, 2 ** np.ceil(np.log2(np.maximum(real, 32))).astype(np.int64))


def run_by_length(
  features: dict[str, np.ndarray],
  batch_size: int,
  forward: Callable[..., dict],
  token_level: Collection[str] = (),
  fill: float = 0.0,
  out_width: int | None = None,
) -> dict[str, np.ndarray]:
  """forward(input_ids, attention_mask, token_type_ids) over length-sorted, bucketed batches.

  features: (rows, ..., width) arrays (a middle axis, e.g. multiple-choice endings, is kept); a row's real
  length is its attention mask's largest sum. forward returns a dict of arrays whose first axis is the batch;
  the outputs named in `token_level` have the length as their second axis and come back at `out_width` (by
  default the longest batch's), the columns a batch did not compute set to `fill`. Outputs are float32 numpy.
  """
  ids = features["input_ids"]
  n, width = ids.shape[0], ids.shape[-1]
  real = features["attention_mask"].reshape(n, -1, width).sum(-1).max(-1)
  bucket = length_buckets(real, width)
  order = np.argsort(-real, kind="stable")
  parts: dict[str, list] = {}
  for start in range(0, n, batch_size):
    rows = order[start : start + batch_size]
    length = int(bucket[rows].max())
    chunk = []
    for key in KEYS:
      a = features[key][rows, ..., :length]
      chunk.append(np.concatenate([a, np.zeros((batch_size - len(rows),) + a.shape[1:], a.dtype)]))
    for name, value in forward(*chunk).items():
      parts.setdefault(name, []).append(np.asarray(value, np.float32)[: len(rows)])
  out = {}
  for name, pieces in parts.items():
    if name in token_level:
      full = out_width or pieces[0].shape[1]  # the first batch holds the longest rows
      pieces = [
        np.pad(p, [(0, 0), (0, full - p.shape[1])] + [(0, 0)] * (p.ndim - 2), constant_values=fill)
        for p in pieces
      ]
    merged = np.empty((n,) + pieces[0].shape[1:], np.float32)
    merged[order] = np.concatenate(pieces)
    out[name] = merged
  return out
