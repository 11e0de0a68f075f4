"""Sequence packing for fine-tuning: short examples share rows, so padding costs (almost) nothing.

A batch of fixed-length features (rows padded to max_seq_length, as data/tasks.py builds them) becomes
fewer rows of the same length, each holding several whole examples one after another:

    row 0: [CLS] a a a [SEP] [CLS] b b [SEP] [CLS] c c c c [SEP] 0 0 0
    row 1: [CLS] d d d d d d d d [SEP] [CLS] e e e [SEP] 0 0 0 0 0 0

`segment_ids` (1, 2, ... per example in its row; 0 on padding) keep attention inside each example and
`position_ids` restart at 0 for each, so every example is encoded exactly as it would be alone. Examples
are placed by first-fit decreasing, which leaves few gaps. Per-example arrays (classification labels)
move to (rows, per_row) slots, with `cls_positions` (where each example's [CLS] sits) and `valid`
(1 for a real example); per-token arrays (tagging labels, word indices) move with their tokens. Span QA
positions (`start_positions`, `end_positions`) count within the example, so the fine-tuning runner adds each
example's offset (finetune.pack_rows) and the span loss takes each slot's softmax over its own tokens only.

The examples of a batch stay the same examples (packing changes rows, not the batch), so a packed run
trains on exactly the data of the unpacked one, in the same steps. Rows per batch vary with the lengths
drawn; `rows_multiple` rounds them up (to the mesh's batch shards), so a run compiles a few shapes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Padding values of per-token arrays that are not 0 (tagging: ignored label, no word).
FILL = {"labels": -100, "word_index": -1}
TOKEN_KEYS_MADE = ("attention_mask", "segment_ids", "position_ids")
EXAMPLE_KEYS_MADE = ("cls_positions", "valid")


class PackingError(ValueError):
  pass


def first_fit_decreasing(lengths: np.ndarray, capacity: int, per_row: int) -> list[list[int]]:
  """Groups of example indices, each group's lengths summing to at most `capacity` and holding at most
  `per_row` examples: longest first, each into the first row with room (deterministic)."""
  lengths = np.asarray(lengths)
  if lengths.size and int(lengths.max()) > capacity:
    raise PackingError(f"an example of {int(lengths.max())} tokens does not fit a row of {capacity}")
  rows: list[list[int]] = []
  room: list[int] = []
  for i in np.argsort(-lengths, kind="stable"):
    need = int(lengths[i])
    for r, free in enumerate(room):
      if need <= free and len(rows[r]) < per_row:
        rows[r].append(int(i))
        room[r] -= need
        break
    else:
      rows.append([int(i)])
      room.append(capacity - need)
  return rows


def per_row_limit(lengths: np.ndarray, length: int) -> int:
  """How many examples a row of `length` can hold at most: the shortest example's count."""
  return max(1, length // max(int(np.min(lengths)), 1))


@dataclasses.dataclass
class Packed:
  """The packed arrays, and where each input example went (to read outputs back per example)."""

  batch: dict[str, np.ndarray]
  row: np.ndarray  # (n,) the row of example i
  slot: np.ndarray  # (n,) its place among its row's examples
  start: np.ndarray  # (n,) its first token in the row
  length: np.ndarray  # (n,) its tokens

  @property
  def rows(self) -> int:
    return len(self.batch["input_ids"])


def pack(features: dict[str, np.ndarray], per_row: int, rows_multiple: int = 1, rows: int = 0) -> Packed:
  """Packs every example of `features` (arrays with one row per example; `attention_mask` marks the
  real tokens, which must come first) into rows of the same length.

  Arrays (n, L) move token by token; arrays (n,) become (rows, per_row) slots. The row count is the
  rows needed rounded up to `rows_multiple`, or exactly `rows` when given (an error if too few)."""
  mask = np.asarray(features["attention_mask"])
  n, length = mask.shape
  lengths = mask.sum(axis=1).astype(np.int64)
  if np.any(mask != (np.arange(length)[None, :] < lengths[:, None])):
    raise PackingError("packing needs each example's real tokens first and padding after them")
  groups = first_fit_decreasing(lengths, length, per_row)
  needed = -(-len(groups) // rows_multiple) * rows_multiple
  if rows and rows < len(groups):
    raise PackingError(f"{n} examples need {len(groups)} packed rows; only {rows} allowed")
  total = rows or needed
  row = np.zeros(n, np.int64)
  slot = np.zeros(n, np.int64)
  start = np.zeros(n, np.int64)
  for r, group in enumerate(groups):
    offset = 0
    for s, i in enumerate(group):
      row[i], slot[i], start[i] = r, s, offset
      offset += lengths[i]
  out: dict[str, np.ndarray] = {}
  # Token positions of every real token, source (example, index) -> target (row, column).
  ex, col = np.nonzero(mask)
  target_col = start[ex] + col
  for key, value in features.items():
    value = np.asarray(value)
    if key in TOKEN_KEYS_MADE + EXAMPLE_KEYS_MADE:
      continue
    if value.ndim >= 2 and value.shape[:2] == (n, length):
      packed = np.full((total, length) + value.shape[2:], FILL.get(key, 0), value.dtype)
      packed[row[ex], target_col] = value[ex, col]
    elif value.ndim >= 1 and value.shape[0] == n:
      packed = np.zeros((total, per_row) + value.shape[1:], value.dtype)
      packed[row, slot] = value
    else:
      raise PackingError(
        f"feature {key!r} of shape {value.shape}: expected ({n}, {length}, ...) or ({n}, ...)"
      )
    out[key] = packed
  out["attention_mask"] = np.zeros((total, length), mask.dtype)
  out["attention_mask"][row[ex], target_col] = 1
  out["segment_ids"] = np.zeros((total, length), np.int32)
  out["segment_ids"][row[ex], target_col] = slot[ex] + 1
  out["position_ids"] = np.zeros((total, length), np.int32)
  out["position_ids"][row[ex], target_col] = col
  out["cls_positions"] = np.zeros((total, per_row), np.int32)
  out["cls_positions"][row, slot] = start
  out["valid"] = np.zeros((total, per_row), np.int32)
  out["valid"][row, slot] = 1
  return Packed(out, row, slot, start, lengths)


def unpack_examples(packed: Packed, values: np.ndarray) -> np.ndarray:
  """(rows, per_row, ...) outputs -> (n, ...), in the input examples' order."""
  return np.asarray(values)[packed.row, packed.slot]


def unpack_tokens(packed: Packed, values: np.ndarray, length: int, fill=0) -> np.ndarray:
  """(rows, L, ...) per-token outputs -> (n, length, ...) in the input order; `fill` after each example."""
  values = np.asarray(values)
  n = len(packed.row)
  out = np.full((n, length) + values.shape[2:], fill, values.dtype)
  ex = np.repeat(np.arange(n), packed.length)
  col = np.arange(len(ex)) - np.repeat(np.cumsum(packed.length) - packed.length, packed.length)
  out[ex, col] = values[packed.row[ex], packed.start[ex] + col]
  return out
