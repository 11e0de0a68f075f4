"""Multiple choice (SWAG): examples from rows, and one "[CLS] context [SEP] ending [SEP]" row per choice,
scored jointly."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bert_jax.data.task_encoding import _check_length, _encode
from bert_jax.data.task_rows import (
  Row,
  TaskDataError,
  _error,
  _is_missing,
  _string_list,
  _text,
  _value,
  _where,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ChoiceExample:
  """A context and its candidate endings; label: the index of the right ending (None: unlabelled).

  start: text every ending continues (SWAG's sent2); each choice reads "start ending".
  """

  context: str
  endings: list[str]
  label: int | None
  line: int
  start: str = ""
  source: str = ""


def _choice_label(value: Any, count: int, source: str, line: int, field: str) -> int | None:
  if _is_missing(value):
    return None
  if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < count:
    raise _error(
      source, line, field, f"label {value!r}; expected the index of the right ending, 0..{count - 1}"
    )
  return int(value)


def choice_examples(
  rows: Iterable[Row],
  source: str,
  *,
  context_field: str,
  endings_field: str | None = None,
  ending_fields: Sequence[str] | None = None,
  label_field: str | None = "label",
  start_field: str | None = None,
) -> list[ChoiceExample]:
  """Multiple-choice examples: the endings from one list column (`endings_field`) or one column each
  (`ending_fields`); the label is the right ending's index (a numeric -1 or label_field None:
  unlabelled). start_field names an optional column that every ending continues."""
  if (endings_field is None) == (ending_fields is None):
    raise ValueError("choice_examples needs exactly one of endings_field (a list column) and ending_fields")
  if ending_fields is not None and len(ending_fields) < 2:
    raise ValueError(f"ending_fields={list(ending_fields)}; expected at least two choices")
  source = str(source)
  examples = []
  for line, row in rows:
    context = _text(row, context_field, source, line)
    start = "" if start_field is None else _value(row, start_field, source, line)
    if not isinstance(start, str):
      raise _error(source, line, start_field, f"{type(start).__name__} {start!r}; expected text")
    if ending_fields is not None:
      endings = [_text(row, f, source, line) for f in ending_fields]
    else:
      endings = _string_list(_value(row, endings_field, source, line), source, line, endings_field, "endings")
      if len(endings) < 2:
        raise _error(source, line, endings_field, f"{len(endings)} ending(s); expected at least two choices")
      for k, ending in enumerate(endings):
        if not isinstance(ending, str) or not ending.strip():
          raise _error(source, line, endings_field, f"ending {k} is {ending!r}; expected non-empty text")
    label = None
    if label_field is not None:
      label = _choice_label(_value(row, label_field, source, line), len(endings), source, line, label_field)
    examples.append(ChoiceExample(context, endings, label, line, start, source))
  if not examples:
    raise TaskDataError(f"{source}: no rows; expected at least one example")
  return examples


SWAG_ENDINGS = ("ending0", "ending1", "ending2", "ending3")


def swag_examples(
  rows: Iterable[Row], source: str, *, label_field: str | None = "label"
) -> list[ChoiceExample]:
  """SWAG's CSV (sent1, sent2, ending0..ending3, label): the context is sent1 and each choice reads
  "sent2 ending_i", as BERT's and Hugging Face's SWAG recipes pair them. label_field=None for the
  unlabelled test file."""
  return choice_examples(
    rows,
    source,
    context_field="sent1",
    start_field="sent2",
    ending_fields=SWAG_ENDINGS,
    label_field=label_field,
  )


def choice_features(
  examples: Sequence[ChoiceExample], tokenizer, max_seq_length: int
) -> dict[str, np.ndarray]:
  """input_ids, attention_mask, token_type_ids (N, C, L): row c is "[CLS] context [SEP] start ending_c
  [SEP]", cut longest-first to max_seq_length; labels (N,) int32, -1 when unlabelled.

  Every example needs the same number of choices C. How many (example, choice) rows were cut is
  logged, not returned, so the dict holds arrays only.
  """
  if not examples:
    raise ValueError("choice_features: no examples")
  choices = len(examples[0].endings)
  for e in examples:
    if len(e.endings) != choices:
      raise TaskDataError(
        f"{_where(e.source, e.line)}: {len(e.endings)} endings, but "
        f"{_where(examples[0].source, examples[0].line)} has {choices}; expected the same number of "
        "choices in every example"
      )
  length = _check_length(max_seq_length, 3)
  contexts = [e.context for e in examples for _ in range(choices)]
  seconds = [f"{e.start} {ending}" if e.start.strip() else ending for e in examples for ending in e.endings]
  input_ids, token_type_ids, attention_mask, truncated = _encode(tokenizer, contexts, seconds, length)
  if truncated:
    logger.warning(
      "%d of %d (example, choice) rows cut to max_seq_length=%d", truncated, len(contexts), max_seq_length
    )
  shape = (len(examples), choices, length)
  return {
    "input_ids": input_ids.reshape(shape),
    "attention_mask": attention_mask.reshape(shape),
    "token_type_ids": token_type_ids.reshape(shape),
    "labels": np.array([-1 if e.label is None else e.label for e in examples], dtype=np.int32),
  }
