"""From the engine's encodings to what a model takes: BERT's truncation lengths, character offsets
widened over combining marks, and a batch as lists or as padded int32 arrays."""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tokenizers

PADDING_CHOICES = ("longest", "max_length", False, "do_not_pad")


def _offsets_over_marks(enc: tokenizers.Encoding, segments: Sequence[str]) -> list[tuple[int, int]]:
  """The engine's offsets, widened over combining marks that normalization folded into a token.

  The engine aligns a composed character ("e" + U+0301 -> "é") with its first original
  character only, so the span would end before the accent; stripped marks likewise fall out of
  their word's span. Text that is already NFC never needs this.
  """
  offsets = enc.offsets
  if all(unicodedata.is_normalized("NFC", t) for t in segments):
    return offsets
  offsets = list(offsets)
  sequence_ids = enc.sequence_ids
  for k, text in enumerate(segments):
    rows = [i for i, sid in enumerate(sequence_ids) if sid == k]
    for n, i in enumerate(rows):
      start, end = offsets[i]
      stop = end
      while stop < len(text) and unicodedata.category(text[stop]) in ("Mn", "Mc", "Me"):
        stop += 1
      # Only marks no later token claims: a later token starting before `stop` owns them.
      if stop > end and (n + 1 == len(rows) or offsets[rows[n + 1]][0] >= stop):
        offsets[i] = (start, stop)
  return offsets


def _truncated_lengths(n_a: int, n_b: int | None, budget: int) -> tuple[int, int | None]:
  """Segment lengths after BERT's longest-first truncation to `budget` tokens (no specials).

  The reference drops one token at a time from the longer segment, from the second on a tie. In
  closed form: a segment within its half of the budget stays whole and the other gets the rest,
  else the first keeps ceil(budget / 2) and the second floor(budget / 2). The engine's own
  LongestFirst disagrees (e.g. on ties), so it is not used.
  """
  if n_b is None:
    return min(n_a, budget), None
  if n_a + n_b <= budget:
    return n_a, n_b
  if 2 * n_a <= budget:
    return n_a, budget - n_a
  if 2 * n_b <= budget:
    return budget - n_b, n_b
  return (budget + 1) // 2, budget // 2


def _padding_mode(padding: str | bool, pad_to_multiple_of: int | None) -> tuple[str | bool, bool]:
  """`padding` checked and spelled out (True means "longest"), and whether the batch is padded."""
  padding = "longest" if padding is True else padding
  if padding not in PADDING_CHOICES:
    raise ValueError(f"padding must be one of {PADDING_CHOICES}, got {padding!r}")
  pad = padding not in (False, "do_not_pad")
  if pad_to_multiple_of is not None and (not pad or int(pad_to_multiple_of) < 1):
    raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r} needs padding and a positive int")
  return padding, pad


def _batch_offsets(
  encodings: Sequence[tokenizers.Encoding], texts: list[str], pairs: list[str] | None
) -> list[list[tuple[int, int]]]:
  segments = [(t,) for t in texts] if pairs is None else list(zip(texts, pairs))
  return [_offsets_over_marks(e, seg) for e, seg in zip(encodings, segments)]


def _as_lists(
  encodings: Sequence[tokenizers.Encoding], offset_rows: list[list[tuple[int, int]]] | None, pairs: bool
) -> dict[str, Any]:
  ids = [e.ids for e in encodings]
  out: dict[str, Any] = {
    "input_ids": ids,
    # Unpadded rows are all attended, and single texts all segment 0: built here, these cost a
    # fraction of reading each row back from the engine.
    "token_type_ids": [e.type_ids for e in encodings] if pairs else [[0] * len(row) for row in ids],
    "attention_mask": [[1] * len(row) for row in ids],
  }
  if offset_rows is not None:
    out["offsets"] = offset_rows
  return out


def _padded_width(lengths: np.ndarray, max_length: int | None, pad_to_multiple_of: int | None) -> int:
  """Row width: `max_length` if given, else the longest row; then up to a multiple if asked."""
  longest = int(lengths.max(initial=0))
  width = longest if max_length is None else max_length
  if longest > width:
    raise ValueError(
      f"example {int(np.argmax(lengths))} has {longest} tokens, more than max_length={width}; "
      "allow truncation"
    )
  if pad_to_multiple_of:
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
  return width


def _as_arrays(
  encodings: Sequence[tokenizers.Encoding],
  lengths: np.ndarray,
  width: int,
  pad_id: int,
  offset_rows: list[list[tuple[int, int]]] | None,
) -> dict[str, Any]:
  """The batch as int32 arrays (B, width), offsets (B, width, 2); `lengths` are the rows' lengths."""
  valid = np.arange(width)[None, :] < lengths[:, None]
  total = int(lengths.sum())

  def fill(rows: Iterator[list[int]], value: int) -> np.ndarray:
    arr = np.full((len(encodings), width), value, dtype=np.int32)
    # Boolean-mask assignment fills row-major: the order of the concatenated rows.
    arr[valid] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=total)
    return arr

  out = {
    "input_ids": fill((e.ids for e in encodings), pad_id),
    "token_type_ids": fill((e.type_ids for e in encodings), 0),
    "attention_mask": valid.astype(np.int32),
  }
  if offset_rows is not None:
    offsets = np.zeros((len(encodings), width, 2), dtype=np.int32)
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(offset_rows))
    offsets[valid] = np.fromiter(flat, dtype=np.int32, count=2 * total).reshape(total, 2)
    out["offsets"] = offsets
  return out
