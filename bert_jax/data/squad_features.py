"""SQuAD windows: examples to fixed-length "[CLS] question [SEP] context [SEP]" rows that slide over long
contexts by `doc_stride` tokens, as BERT's reference `run_squad.py` makes them, with each context
token's character offsets so that answers can be read back from the context (squad_answers.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from bert_jax.data.squad_examples import MAX_MESSAGES, QAExample

logger = logging.getLogger(__name__)

# Contexts tokenized per call: bounds the memory of the engine's encodings on large splits.
_TOKENIZE_CHUNK = 2048


@dataclasses.dataclass
class QAFeatures:
  """Model windows, one row per window; several rows may share an example (example_index).

  input_ids, attention_mask, token_type_ids: (N, L) int32, "[CLS] question [SEP] context [SEP]" padded.
  start_positions, end_positions: (N,) int32 token indexes of the answer, 0 ([CLS]) when the window
    does not hold the whole answer or the question is unanswerable; None unless made for training.
  example_index: (N,) int32, the example each window belongs to.
  offsets: (N, L, 2) int32, (start, end) characters in the example's context for context tokens, -1
    for [CLS], question, [SEP] and padding.
  max_context: (N, L) bool, True where this window gives the token its most context (the reference's
    token_is_max_context); each context token is True in exactly one window.
  """

  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray
  example_index: np.ndarray
  offsets: np.ndarray
  max_context: np.ndarray
  start_positions: np.ndarray | None = None
  end_positions: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.input_ids)

  def model_inputs(self) -> dict[str, np.ndarray]:
    """The arrays a batch holds: the three model inputs, plus the positions when made for training."""
    out = {
      "input_ids": self.input_ids,
      "attention_mask": self.attention_mask,
      "token_type_ids": self.token_type_ids,
    }
    if self.start_positions is not None:
      out |= {"start_positions": self.start_positions, "end_positions": self.end_positions}
    return out


def _tokenize(
  tokenizer, texts: Sequence[str], offsets: bool
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
  """Token ids (and character offsets) of each text without [CLS]/[SEP], never truncated.

  Through the batch call rather than `encode`, whose default truncates to the checkpoint's
  model_max_length (512): a context must be tokenized whole before it is cut into windows.
  """
  ids, offs = [], []
  for i in range(0, len(texts), _TOKENIZE_CHUNK):
    out = tokenizer(
      list(texts[i : i + _TOKENIZE_CHUNK]), padding=False, truncation=False, return_offsets=offsets
    )
    ids += [row[1:-1] for row in out["input_ids"]]
    if offsets:
      offs += [list(row[1:-1]) for row in out["offsets"]]
  return ids, offs


def doc_windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) of each context window, as the reference makes them.

  Each window takes up to max_tokens tokens; the next starts doc_stride tokens later (never further
  than the window reached, so no token is skipped when doc_stride > max_tokens), until one reaches the
  end. An empty context gets one empty window so that every example has a feature.
  """
  windows, start = [], 0
  while True:
    length = min(num_tokens - start, max_tokens)
    windows.append((start, length))
    if start + length >= num_tokens:
      return windows
    start += min(length, doc_stride)


def _max_context_window(num_tokens: int, windows: list[tuple[int, int]]) -> np.ndarray:
  """For each context token, the window where it has the most context (first window on a tie).

  The reference's score: min(tokens left of it, tokens right of it) + 0.01 * window length.
  """
  best = np.full(num_tokens, -1, np.int64)
  best_score = np.full(num_tokens, -np.inf)
  for w, (start, length) in enumerate(windows):
    pos = np.arange(start, start + length)
    score = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
    better = score > best_score[pos]
    best[pos[better]] = w
    best_score[pos[better]] = score[better]
  return best


def _answer_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
  """First and last context tokens whose characters overlap [start, end); None when none does."""
  if not len(offsets):
    return None
  hit = np.flatnonzero((offsets[:, 0] < end) & (offsets[:, 1] > start))
  return (int(hit[0]), int(hit[-1])) if len(hit) else None


class _Plan(NamedTuple):
  """One example's windows, worked out before any row is written."""

  example: int
  question_ids: list[int]
  context_ids: np.ndarray
  context_offsets: np.ndarray
  windows: list[tuple[int, int]]
  best: np.ndarray  # per context token, the window where it has the most context
  answer: tuple[int, int] | None  # first and last context token of the answer (training only)


def _tokenize_texts(
  examples: Sequence[QAExample], tokenizer
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[list[int]]]:
  """Each distinct context's token ids and character offsets (tokenized once however many questions
  share it), and each question's token ids."""
  contexts = list(dict.fromkeys(ex.context for ex in examples))
  context_ids, context_offsets = _tokenize(tokenizer, contexts, offsets=True)
  by_context = {
    c: (np.asarray(i, np.int32), np.asarray(o, np.int32).reshape(-1, 2))
    for c, i, o in zip(contexts, context_ids, context_offsets)
  }
  question_ids, _ = _tokenize(tokenizer, [ex.question for ex in examples], offsets=False)
  return by_context, question_ids


def _plan_windows(
  examples: Sequence[QAExample],
  by_context: dict[str, tuple[np.ndarray, np.ndarray]],
  question_ids: list[list[int]],
  *,
  max_seq_length: int,
  doc_stride: int,
  max_query_length: int,
  training: bool,
) -> list[_Plan]:
  """Each example's question (cut to max_query_length), context windows and, for training, answer
  tokens; a training example whose answer covers no token gets no plan (logged)."""
  plans, unlocatable = [], []
  for e, ex in enumerate(examples):
    q_ids = question_ids[e][:max_query_length]
    max_tokens = max_seq_length - len(q_ids) - 3
    if max_tokens < 1:
      raise ValueError(
        f"max_seq_length={max_seq_length} leaves no room for context after a {len(q_ids)}-token question "
        f"(max_query_length={max_query_length}) and 3 special tokens"
      )
    c_ids, c_offs = by_context[ex.context]
    answer = None
    if training and not ex.is_impossible:
      if not ex.answers:
        raise ValueError(f"example {e} ({ex.qid!r}) has no answer and is not marked is_impossible")
      text, start = ex.answers[0]
      answer = _answer_tokens(c_offs, start, start + len(text))
      if answer is None:
        unlocatable.append(ex.qid)
        continue
    windows = doc_windows(len(c_ids), max_tokens, doc_stride)
    plans.append(_Plan(e, q_ids, c_ids, c_offs, windows, _max_context_window(len(c_ids), windows), answer))
  if unlocatable:
    logger.warning(
      "%d training examples have an answer that covers no token and get no windows: %s",
      len(unlocatable),
      unlocatable[:MAX_MESSAGES],
    )
  return plans


def _write_windows(plans: Sequence[_Plan], tokenizer, max_seq_length: int, training: bool) -> QAFeatures:
  """One row per planned window, "[CLS] question [SEP] context-window [SEP]" padded to max_seq_length,
  with its offsets, max-context flags and (inside the window) answer positions."""
  cls_id, sep_id, pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
  n = sum(len(p.windows) for p in plans)
  shape = (n, max_seq_length)
  input_ids = np.full(shape, pad_id, np.int32)
  attention_mask = np.zeros(shape, np.int32)
  token_type_ids = np.zeros(shape, np.int32)
  offsets = np.full(shape + (2,), -1, np.int32)
  max_context = np.zeros(shape, bool)
  example_index = np.zeros(n, np.int32)
  start_positions = np.zeros(n, np.int32)
  end_positions = np.zeros(n, np.int32)
  row = 0
  for e, q_ids, c_ids, c_offs, windows, best, answer in plans:
    first = len(q_ids) + 2  # where the context starts in each row
    for w, (start, length) in enumerate(windows):
      stop = first + length
      input_ids[row, 0] = cls_id
      input_ids[row, 1 : first - 1] = q_ids
      input_ids[row, first - 1] = sep_id
      input_ids[row, first:stop] = c_ids[start : start + length]
      input_ids[row, stop] = sep_id
      attention_mask[row, : stop + 1] = 1
      token_type_ids[row, first : stop + 1] = 1
      offsets[row, first:stop] = c_offs[start : start + length]
      max_context[row, first:stop] = best[start : start + length] == w
      example_index[row] = e
      if answer is not None and start <= answer[0] and answer[1] < start + length:
        start_positions[row] = answer[0] - start + first
        end_positions[row] = answer[1] - start + first
      row += 1
  return QAFeatures(
    input_ids=input_ids,
    attention_mask=attention_mask,
    token_type_ids=token_type_ids,
    example_index=example_index,
    offsets=offsets,
    max_context=max_context,
    start_positions=start_positions if training else None,
    end_positions=end_positions if training else None,
  )


def make_features(
  examples: Sequence[QAExample],
  tokenizer,
  *,
  max_seq_length: int = 384,
  doc_stride: int = 128,
  max_query_length: int = 64,
  training: bool,
) -> QAFeatures:
  """Windows "[CLS] question [SEP] context-window [SEP]" over each example, padded to max_seq_length.

  The question keeps its first max_query_length tokens; the context windows advance by doc_stride
  tokens (see doc_windows). Each distinct text is tokenized once. For training, the answer is the
  first one; its tokens are those whose characters overlap [answer_start, answer_start + len(text));
  an answerable example whose answer covers no token (only whitespace or control characters) gets no
  windows (logged). Evaluation gives every example at least one window.
  """
  if doc_stride < 1 or max_query_length < 0:
    raise ValueError(
      f"doc_stride must be >= 1 and max_query_length >= 0, got {doc_stride} and {max_query_length}"
    )
  by_context, question_ids = _tokenize_texts(examples, tokenizer)
  plans = _plan_windows(
    examples,
    by_context,
    question_ids,
    max_seq_length=max_seq_length,
    doc_stride=doc_stride,
    max_query_length=max_query_length,
    training=training,
  )
  return _write_windows(plans, tokenizer, max_seq_length, training)
