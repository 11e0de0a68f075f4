"""Encoding task texts into BERT's fixed-length arrays: the max_seq_length check and the padded
input_ids, token_type_ids and attention_mask that classification and multiple choice share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _check_length(max_seq_length: Any, minimum: int) -> int:
  if (
    isinstance(max_seq_length, bool)
    or not isinstance(max_seq_length, (int, np.integer))
    or max_seq_length < minimum
  ):
    raise ValueError(
      f"max_seq_length must be an int of at least {minimum} (the special tokens), got {max_seq_length!r}"
    )
  return int(max_seq_length)


def _pad(rows: Sequence[Sequence[int]], width: int, value: int) -> np.ndarray:
  out = np.full((len(rows), width), value, dtype=np.int32)
  for i, row in enumerate(rows):
    out[i, : len(row)] = row
  return out


def _encode(tokenizer, texts: list[str], pairs: list[str] | None, max_seq_length: int):
  """input_ids, token_type_ids, attention_mask (N, L) and how many rows max_seq_length cut.

  Rows are encoded whole first to see which are too long; only those are encoded again with the
  tokenizer's own truncation (BERT's longest-first for pairs).
  """
  full = tokenizer(texts, pairs, truncation=False, padding=False)
  ids, types = full["input_ids"], full["token_type_ids"]
  over = [i for i, row in enumerate(ids) if len(row) > max_seq_length]
  if over:
    cut = tokenizer(
      [texts[i] for i in over],
      None if pairs is None else [pairs[i] for i in over],
      max_length=max_seq_length,
      truncation=True,
      padding=False,
    )
    for k, i in enumerate(over):
      ids[i], types[i] = cut["input_ids"][k], cut["token_type_ids"][k]
  lengths = np.array([len(row) for row in ids], dtype=np.int64)
  mask = (np.arange(max_seq_length)[None, :] < lengths[:, None]).astype(np.int32)
  return _pad(ids, max_seq_length, tokenizer.pad_id), _pad(types, max_seq_length, 0), mask, len(over)
