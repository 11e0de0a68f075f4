"""SQuAD answers: per-window start and end logits back to one answer per question, the exact character
span of its context."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bert_jax.data.squad_examples import QAExample
from bert_jax.data.squad_features import QAFeatures


@dataclasses.dataclass
class Prediction:
  """The answer to one question.

  text is context[start_char:end_char]; "" with start_char = end_char = -1 for no answer. score is
  the chosen answer's start + end logit (the null score when text is ""). null_score_diff is the null
  score minus the best non-null score (inf when there is no valid span): v2.0 answers "" when it
  exceeds the threshold, and metrics tune the threshold on it. n_best: the best candidates, best
  first, as dicts of text, start_char, end_char, score (v2.0 includes the null answer among them).
  """

  text: str
  start_char: int
  end_char: int
  score: float
  null_score_diff: float
  n_best: list[dict[str, Any]]


def _top(logits: np.ndarray, k: int) -> np.ndarray:
  # Stable on ties (lower index first), so the result does not depend on the sort's internals.
  return np.argsort(-logits, kind="stable")[:k]


def _feature_candidates(
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  offsets: np.ndarray,
  max_context: np.ndarray,
  real: np.ndarray,
  n_best: int,
  max_answer_length: int,
) -> Iterable[tuple[float, int, int]]:
  """(score, start_char, end_char) of every valid span among one window's top start and end tokens
  (ranked among its real tokens: `real` is its attention mask)."""
  tokens = np.flatnonzero(real)
  starts, ends = tokens[_top(start_logits[tokens], n_best)], tokens[_top(end_logits[tokens], n_best)]
  is_context = offsets[:, 0] >= 0
  valid = (
    (is_context[starts] & max_context[starts])[:, None]
    & is_context[ends][None, :]
    & (ends[None, :] >= starts[:, None])
    & (ends[None, :] - starts[:, None] + 1 <= max_answer_length)
  )
  for i, j in zip(*np.nonzero(valid)):
    s, e = starts[i], ends[j]
    yield float(start_logits[s]) + float(end_logits[e]), int(offsets[s, 0]), int(offsets[e, 1])


def _checked_logits(
  examples: Sequence[QAExample], features: QAFeatures, start_logits, end_logits
) -> tuple[np.ndarray, np.ndarray]:
  """The logits as float32 arrays, after checking they and the features fit each other and the examples."""
  start_logits = np.asarray(start_logits, np.float32)
  end_logits = np.asarray(end_logits, np.float32)
  shape = features.input_ids.shape
  if start_logits.shape != shape or end_logits.shape != shape:
    raise ValueError(
      f"logits have shapes {start_logits.shape} and {end_logits.shape}; the features are {shape} (windows, length)"
    )
  if len(features) and int(features.example_index.max()) >= len(examples):
    raise ValueError(
      f"features refer to example {int(features.example_index.max())} but only {len(examples)} examples were given"
    )
  return start_logits, end_logits


def _ranked_spans(
  rows: Sequence[int],
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  features: QAFeatures,
  n_best: int,
  max_answer_length: int,
) -> list[tuple[float, int, int]]:
  """(score, start_char, end_char) of every distinct span the question's windows propose, each with its
  best score over the windows, best first (ties: earlier span first)."""
  spans: dict[tuple[int, int], float] = {}
  for r in rows:
    for score, s, t in _feature_candidates(
      start_logits[r],
      end_logits[r],
      features.offsets[r],
      features.max_context[r],
      features.attention_mask[r],
      n_best,
      max_answer_length,
    ):
      if score > spans.get((s, t), -np.inf):
        spans[(s, t)] = score
  return sorted(((score, s, t) for (s, t), score in spans.items()), key=lambda c: (-c[0], c[1], c[2]))


def _prediction(
  context: str,
  ranked: list[tuple[float, int, int]],
  null_score: float,
  *,
  n_best: int,
  version_2: bool,
  null_score_diff_threshold: float,
) -> Prediction:
  """The answer from the ranked spans and the null score: the best span, or "" where there is none or
  (version_2) the null score beats it by more than the threshold."""
  best = ranked[0] if ranked else None
  diff = null_score - best[0] if best else float("inf")
  if best is None or (version_2 and diff > null_score_diff_threshold):
    chosen = (null_score, -1, -1)
  else:
    chosen = best
  listed = ranked + [(null_score, -1, -1)] if version_2 else ranked
  listed = sorted(listed, key=lambda c: (-c[0], c[1], c[2]))[:n_best]
  return Prediction(
    text=_slice(context, chosen[1], chosen[2]),
    start_char=chosen[1],
    end_char=chosen[2],
    score=chosen[0],
    null_score_diff=diff,
    n_best=[
      {"text": _slice(context, s, t), "start_char": s, "end_char": t, "score": sc} for sc, s, t in listed
    ],
  )


def postprocess(
  examples: Sequence[QAExample],
  features: QAFeatures,
  start_logits,
  end_logits,
  *,
  n_best: int = 20,
  max_answer_length: int = 30,
  version_2: bool = False,
  null_score_diff_threshold: float = 0.0,
) -> dict[str, Prediction]:
  """Best answer span per question (keyed by qid) from the windows' start and end logits (N, L).

  As the reference: per window, the n_best highest start and end tokens pair into candidates, valid
  when both are context tokens, start <= end, the span has at most max_answer_length tokens and the
  start token has its max context in this window; a span's score is start logit + end logit, and the
  best over all windows of the question wins. The null score is the smallest [CLS] start + end over
  the question's windows; with version_2 the answer is "" when null score - best span score exceeds
  null_score_diff_threshold.

  Unlike the reference, which detokenizes the span's wordpieces and maps them back onto the
  whitespace-split context heuristically, the answer is the exact slice of the context between the
  first token's first character and the last token's last character: accents, case, unicode
  punctuation and inner whitespace come out as written. Candidates are distinct character spans (the
  reference merges equal texts at different places). The n_best tokens are ranked among the window's real
  tokens: the reference ranks its padding too, whose logits (never an answer) can push real candidates out
  of the n_best, so its answers depend on how far a window is padded; here they do not (evaluation and the
  Predictor cut batches to different widths).
  """
  start_logits, end_logits = _checked_logits(examples, features, start_logits, end_logits)
  rows_of: dict[int, list[int]] = {}
  for row, e in enumerate(features.example_index.tolist()):
    rows_of.setdefault(e, []).append(row)

  predictions = {}
  for e, ex in enumerate(examples):
    rows = rows_of.get(e)
    if not rows:
      raise ValueError(
        f"example {e} ({ex.qid!r}) has no feature; were the features made from these examples?"
      )
    null_score = min(float(start_logits[r, 0]) + float(end_logits[r, 0]) for r in rows)
    ranked = _ranked_spans(rows, start_logits, end_logits, features, n_best, max_answer_length)
    predictions[ex.qid] = _prediction(
      ex.context,
      ranked,
      null_score,
      n_best=n_best,
      version_2=version_2,
      null_score_diff_threshold=null_score_diff_threshold,
    )
  return predictions


def _slice(context: str, start: int, end: int) -> str:
  return "" if start < 0 else context[start:end]
