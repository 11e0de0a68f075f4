"""Model outputs in a task's own terms: logits to labels with probabilities or a score, word-piece tags
to words and entities with character offsets, SQuAD predictions to answers, choice logits to a choice.
The Predictor (predictor.py) runs the model; this module only decodes what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# --- tagging -------------------------------------------------------------------------------------


def words_from_pieces(
  tokens: Sequence[str], offsets: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int]]:
  """[(first piece index, start char, end char)] per word: a word is a piece not starting with "##"
  and the "##" pieces after it ([CLS]/[SEP] and other zero-width pieces are skipped)."""
  words: list[list[int]] = []
  for i, (token, (start, end)) in enumerate(zip(tokens, offsets)):
    if start == end:
      continue
    if token.startswith("##") and words:
      words[-1][2] = end
    else:
      words.append([i, start, end])
  return [tuple(w) for w in words]


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """[(type, first word, last word)] from chunk tags, IOB1, IOB2 or IOBES (B-, I-, E-, S-), read as conlleval
  and seqeval read them, which `metrics.entity_scores` scores with: a chunk ends after E- or S-, before B-, S-
  or O, and where the type changes; it starts at B- or S-, or at an I- or E- that continues no chunk (after O,
  E-, S- or another type)."""
  entities, current, prev_prefix = [], None, "O"
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, _, kind = tag.partition("-") if tag != "O" else ("O", "", "")
    if current is not None and (prev_prefix in ("E", "S") or prefix in ("B", "S", "O") or kind != current[0]):
      entities.append(tuple(current))
      current = None
    if prefix in ("B", "S") or (prefix in ("I", "E") and current is None):
      current = [kind, i, i]
    elif current is not None:
      current[2] = i
    prev_prefix = prefix
  return entities


def _is_bio(labels: Sequence[str]) -> bool:
  return any(label.startswith(("B-", "I-", "E-", "S-")) for label in labels)


def tagged(text: str, tokens: Sequence[str], offsets, logits: np.ndarray, labels: Sequence[str]) -> dict:
  """One text's words with their tags (each word tagged by its first piece's logits) and, for chunk tags,
  its entities, all with character offsets."""
  words = words_from_pieces(tokens, offsets)
  tags = [labels[int(logits[first].argmax())] for first, _, _ in words]
  result: dict[str, Any] = {
    "words": [{"text": text[s:e], "start": s, "end": e, "tag": t} for (_, s, e), t in zip(words, tags)]
  }
  if _is_bio(labels):
    result["entities"] = [
      {"type": kind, "text": text[words[a][1] : words[b][2]], "start": words[a][1], "end": words[b][2]}
      for kind, a, b in bio_entities(tags)
    ]
  return result


# --- classification, regression, span QA, multiple choice ---------------------------------------


def scores(logits: np.ndarray) -> list[dict]:
  """Regression: one score per row."""
  return [{"score": float(row[0])} for row in logits]


def classified(logits: np.ndarray, labels: Sequence[str]) -> list[dict]:
  """Per row: the label, a probability per label and the logits."""
  shifted = logits - logits.max(-1, keepdims=True)
  probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
  return [
    {
      "label": labels[int(row.argmax())],
      "probabilities": {label: round(float(p), 6) for label, p in zip(labels, row)},
      "logits": [round(float(v), 6) for v in logit_row],
    }
    for row, logit_row in zip(probs, logits)
  ]


def answered(prediction) -> dict:
  """A squad.postprocess prediction: the text and its character offsets; no_answer when the model chose
  none (SQuAD 2.0)."""
  return {
    "answer": prediction.text,
    "start": prediction.start_char,
    "end": prediction.end_char,
    "score": float(prediction.score),
    "no_answer": prediction.text == "" and prediction.start_char < 0,
  }


def chosen(logits: np.ndarray) -> dict:
  """Which ending (index) and a probability per ending, from one example's logits."""
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  return {"label": int(logits.argmax()), "probabilities": [round(float(p), 6) for p in probs]}
