"""Sequence classification and regression (GLUE, sentiment): examples from rows, and their BERT features.

One text or a pair, "[CLS] A [SEP] B [SEP]", pairs cut longest-first; the model reads [CLS]. Labels are
class ids (int32, -1 when unlabelled) or float32 scores (NaN when unlabelled).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bert_jax.data.task_encoding import _check_length, _encode
from bert_jax.data.task_rows import (
  Row,
  TaskDataError,
  _error,
  _is_missing,
  _label_name,
  _text,
  _value,
  _where,
)


@dataclasses.dataclass
class TextExample:
  """One text (or pair) and its label: a class id, a float score, or None when unlabelled."""

  text: str
  pair: str | None
  label: int | float | None
  line: int
  source: str = ""


def _label_ids(labels: Sequence[Any]) -> dict[str, int]:
  ids: dict[str, int] = {}
  for i, label in enumerate(labels):
    name = _label_name(label)
    if name in ids:
      raise ValueError(
        f"labels lists {name!r} twice (positions {ids[name]} and {i}); expected distinct labels"
      )
    ids[name] = i
  return ids


def _class_id(
  value: Any, label_ids: dict[str, int], names: list[str], source: str, line: int, field: str
) -> int:
  """A label's id: by name, or for an int that names no label, as an index (TFDS ClassLabel values)."""
  name = _label_name(value)
  if name in label_ids:
    return label_ids[name]
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(names):
    return int(value)
  raise _error(source, line, field, f"label {value!r} is not one of the labels {names}")


def _regression_label(value: Any, source: str, line: int, field: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (str, int, float, np.number)):
    raise _error(source, line, field, f"{type(value).__name__} {value!r}; expected a number")
  try:
    score = float(value)
  except ValueError:
    raise _error(source, line, field, f"{value!r} is not a number; expected a float score") from None
  if not math.isfinite(score):
    raise _error(source, line, field, f"{value!r} is not finite; expected a float score")
  return score


def classification_examples(
  rows: Iterable[Row],
  source: str,
  *,
  text_field: str,
  pair_field: str | None = None,
  label_field: str | None = "label",
  labels: Sequence[Any] | None = None,
  regression: bool = False,
) -> list[TextExample]:
  """Text (and pair) examples with class ids (position in `labels`) or float scores (regression).

  A label value matches a label by name (numbers by their decimal spelling); an int that names no
  label is an index into `labels`, as TFDS stores ClassLabel values. A numeric -1 means unlabelled
  (TFDS test splits, STS-B's float -1.0 included) and gives label None; so does label_field=None
  (files without labels). Text in a CSV/TSV is never that marker: "-1" there is a label or a score
  like any other. The label set comes from the caller (task config, tfds_label_names, or
  infer_labels on training rows).
  """
  source = str(source)
  if label_field is not None and not regression and labels is None:
    raise TaskDataError(
      f"{source}: classification needs the label set: pass labels= (from the task config, "
      f"tfds_label_names, or infer_labels(training rows, {label_field!r}))"
    )
  label_ids = {} if labels is None else _label_ids(labels)
  names = list(label_ids)
  examples = []
  for line, row in rows:
    text = _text(row, text_field, source, line)
    pair = None if pair_field is None else _text(row, pair_field, source, line)
    label: int | float | None = None
    if label_field is not None:
      value = _value(row, label_field, source, line)
      if value is None:
        raise _error(
          source, line, label_field, "null; expected a label (pass label_field=None for unlabelled data)"
        )
      if _is_missing(value):
        label = None
      elif regression:
        label = _regression_label(value, source, line, label_field)
      else:
        label = _class_id(value, label_ids, names, source, line, label_field)
    examples.append(TextExample(text, pair, label, line, source))
  if not examples:
    raise TaskDataError(f"{source}: no rows; expected at least one example")
  return examples


def classification_features(
  examples: Sequence[TextExample], tokenizer, max_seq_length: int
) -> dict[str, Any]:
  """input_ids, attention_mask, token_type_ids (N, L) padded to max_seq_length; labels (N,): int32
  class ids (-1 when unlabelled) or float32 scores (NaN when unlabelled); `truncated`: an int, the
  number of examples cut to max_seq_length (pairs longest-first). Pop it before batching."""
  if not examples:
    raise ValueError("classification_features: no examples")
  has_pair = [e.pair is not None for e in examples]
  if any(has_pair) and not all(has_pair):
    odd = examples[has_pair.index(not has_pair[0])]
    raise TaskDataError(
      f"{_where(odd.source, odd.line)}: {'has' if odd.pair is not None else 'lacks'} a pair text, unlike "
      f"{_where(examples[0].source, examples[0].line)}; expected all single texts or all pairs"
    )
  length = _check_length(max_seq_length, 3 if has_pair[0] else 2)
  texts = [e.text for e in examples]
  pairs = [e.pair for e in examples] if has_pair[0] else None
  input_ids, token_type_ids, attention_mask, truncated = _encode(tokenizer, texts, pairs, length)
  if any(isinstance(e.label, float) for e in examples):
    labels = np.array([np.nan if e.label is None else e.label for e in examples], dtype=np.float32)
  else:
    labels = np.array([-1 if e.label is None else e.label for e in examples], dtype=np.int32)
  return {
    "input_ids": input_ids,
    "attention_mask": attention_mask,
    "token_type_ids": token_type_ids,
    "labels": labels,
    "truncated": truncated,
  }
