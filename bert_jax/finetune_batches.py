"""How fine-tuning examples become batches: each epoch's order (a function of seed and epoch alone, so a
resumed run sees the batches the uninterrupted one would have), rows taken and padded, and packing several
examples into one row (data/packing.py) for the task kinds that allow it."""

from __future__ import annotations

import numpy as np

from bert_jax.data import packing


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def take_rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
  return {k: v[rows] for k, v in arrays.items()}


def pad_rows(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(next(iter(arrays.values())))
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in arrays.items()}
  out["valid"] = (np.arange(size) < n).astype(np.int32)
  return out


# --- packing ---------------------------------------------------------------------------------

PACKABLE = ("classification", "regression", "tagging", "span")


def check_packing(config, kind: str) -> None:
  if not config.data.packing:
    return
  if kind not in PACKABLE:
    raise ValueError(f"config.data.packing=True works for {list(PACKABLE)} tasks, not kind={kind!r}")
  if config.optimizer.accumulation_steps != 1:
    raise ValueError(
      "config.data.packing=True with optimizer.accumulation_steps="
      f"{config.optimizer.accumulation_steps}: packed batches are not split into microbatches; use one"
    )


def pack_rows(features: dict[str, np.ndarray], kind: str, per_row: int, rows_multiple: int = 1):
  """The packed form of these examples (data/packing.py). Tagging keeps its per-token labels and needs
  no per-example slots; classification and regression read one pooled vector per example; span QA keeps
  per-example answer positions (moved to where the example starts in its row) and `valid`."""
  packed = packing.pack(features, per_row, rows_multiple)
  b = packed.batch
  if kind == "tagging":
    for key in packing.EXAMPLE_KEYS_MADE:
      b.pop(key)
  elif kind == "span":
    offset = b.pop("cls_positions")
    for key in ("start_positions", "end_positions"):
      if key in b:
        b[key] = ((b[key] + offset) * b["valid"]).astype(b[key].dtype)
  return packed
