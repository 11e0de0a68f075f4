"""Fine-tuning evaluation: GLUE metrics, SQuAD v1.1/v2.0 exact match and F1, CoNLL entity-level scores.

Libraries do what they do exactly (scipy for correlations, scikit-learn for F1 and MCC, seqeval in its
default conlleval-compatible mode for entities); SQuAD's scoring is written here from the official
evaluation scripts' definitions, because no maintained library ships them without a framework attached.

Which GLUE task reports which metric (`TASK_METRICS` name and the keys it returns):

  ================  ====================  ===============================================
  task              TASK_METRICS name     keys
  ================  ====================  ===============================================
  CoLA              matthews              matthews
  SST-2             accuracy              accuracy
  MRPC, QQP         accuracy_f1           accuracy, f1, accuracy_f1_mean
  STS-B             pearson_spearman      pearson, spearman, pearson_spearman_mean
  MNLI-m, MNLI-mm   accuracy              accuracy
  QNLI, RTE, WNLI   accuracy              accuracy
  (multi-class F1)  macro_f1              accuracy, macro_f1
  ================  ====================  ===============================================

Classification metrics take predicted class ids (argmax of the logits), STS-B's take float scores; both
take 1-D arrays of equal length. Every value returned is a plain Python float (or int for counts).

Degenerate inputs: an empty input is an error (there is nothing to score, and a silent number would hide
a broken eval split). A constant prediction (or label) vector gives 0.0 for MCC, as GLUE's evaluation
(scikit-learn's matthews_corrcoef) does, and also 0.0 for Pearson and Spearman, where the coefficient is
mathematically undefined (0/0): a predictor that does not vary carries no information about the labels,
and a finite 0.0 keeps `pearson_spearman_mean`, best-checkpoint selection and the runner's non-finite
check meaningful, where nan would poison all three.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats
from seqeval.metrics import sequence_labeling
from sklearn import metrics as skm

# ---------------------------------------------------------------------------------------------------------
# GLUE-style classification and regression metrics


def _pair(predictions, labels, names: tuple[str, str] = ("predictions", "labels")) -> tuple[np.ndarray, ...]:
  """Both as 1-D numpy arrays of one length, or a ValueError that says which rule they break."""
  arrays = tuple(np.asarray(a) for a in (predictions, labels))
  for name, a in zip(names, arrays):
    if a.ndim != 1:
      raise ValueError(
        f"{name} has shape {a.shape}; expected one value per example, shape (N,) "
        "(for classifiers, take the argmax of the logits first)"
      )
  if arrays[0].shape != arrays[1].shape:
    raise ValueError(
      f"{names[0]} has {arrays[0].shape[0]} values and {names[1]} has {arrays[1].shape[0]}; expected the same"
    )
  if arrays[0].size == 0:
    raise ValueError(f"{names[0]} and {names[1]} are empty; there is nothing to score")
  return arrays


def accuracy(predictions, labels) -> float:
  """Fraction of examples whose prediction equals the label."""
  predictions, labels = _pair(predictions, labels)
  return float(np.mean(predictions == labels))


def f1(predictions, labels) -> float:
  """Binary F1 of the positive class 1 (MRPC and QQP: 1 = paraphrase / duplicate). 0.0 when undefined."""
  predictions, labels = _pair(predictions, labels)
  for name, a in (("predictions", predictions), ("labels", labels)):
    other = sorted(set(np.unique(a).tolist()) - {0, 1})
    if other:
      raise ValueError(f"binary f1: {name} hold {other[:5]}; expected only class ids 0 and 1 (use macro_f1)")
  return float(skm.f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0))


def macro_f1(predictions, labels) -> float:
  """Unweighted mean of per-class F1 over the classes seen in labels or predictions."""
  predictions, labels = _pair(predictions, labels)
  return float(skm.f1_score(labels, predictions, average="macro", zero_division=0))


def matthews(predictions, labels) -> float:
  """Matthews correlation coefficient (CoLA); 0.0 when either side is constant (GLUE's convention)."""
  predictions, labels = _pair(predictions, labels)
  # The formula's denominator is then 0; scikit-learn returns 0.0 too, but warns about a one-class matrix.
  if np.unique(predictions).size < 2 or np.unique(labels).size < 2:
    return 0.0
  return float(skm.matthews_corrcoef(labels, predictions))


def _correlation(fn, x, y) -> float:
  x, y = _pair(x, y, ("x", "y"))
  x, y = x.astype(np.float64), y.astype(np.float64)
  if x.size < 2:
    raise ValueError(f"a correlation needs at least 2 values; got {x.size}")
  # Undefined for a constant vector; 0.0 by the module's convention (see the docstring). nan stays nan.
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return 0.0
  return float(fn(x, y).statistic)


def pearson(x, y) -> float:
  """Pearson's r (STS-B); 0.0 when either side is constant."""
  return _correlation(stats.pearsonr, x, y)


def spearman(x, y) -> float:
  """Spearman's rank correlation, ties given their mean rank (STS-B); 0.0 when either side is constant."""
  return _correlation(stats.spearmanr, x, y)


def _accuracy_f1(predictions, labels) -> dict[str, float]:
  acc, f = accuracy(predictions, labels), f1(predictions, labels)
  return {"accuracy": acc, "f1": f, "accuracy_f1_mean": (acc + f) / 2}


def _pearson_spearman(predictions, labels) -> dict[str, float]:
  p, s = pearson(predictions, labels), spearman(predictions, labels)
  return {"pearson": p, "spearman": s, "pearson_spearman_mean": (p + s) / 2}


TaskMetric = Callable[[np.ndarray, np.ndarray], dict[str, float]]

TASK_METRICS: dict[str, TaskMetric] = {
  "accuracy": lambda p, y: {"accuracy": accuracy(p, y)},
  "accuracy_f1": _accuracy_f1,
  "matthews": lambda p, y: {"matthews": matthews(p, y)},
  "pearson_spearman": _pearson_spearman,
  "macro_f1": lambda p, y: {"accuracy": accuracy(p, y), "macro_f1": macro_f1(p, y)},
}


def task_metrics(name: str, predictions, labels) -> dict[str, float]:
  """The metrics of TASK_METRICS[name] on (predictions, labels)."""
  if name not in TASK_METRICS:
    raise ValueError(f"unknown task metric {name!r}; known: {sorted(TASK_METRICS)}")
  return TASK_METRICS[name](predictions, labels)


# ---------------------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0, from the official evaluation scripts' definitions

# Only ASCII punctuation: the official scripts strip string.punctuation, so "«", "—" or "¿" stay.
_PUNCTUATION = frozenset(string.punctuation)
# Articles only as whole words (\b is Unicode-aware on str): "theater" keeps its "the".
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
  """Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (in that order)."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def _scoring_golds(golds: Sequence[str] | str) -> list[str]:
  """The gold answers that count: those that normalise to something, else [""] (unanswerable).

  As SQuAD v2.0's script: a question whose answers are all empty after normalisation has only the empty
  answer as its correct answer.
  """
  if isinstance(golds, str):  # one answer given bare; iterating it would score single characters
    golds = [golds]
  kept = [g for g in golds if normalize_answer(g)]
  return kept or [""]


def _exact(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1(prediction: str, gold: str) -> float:
  pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not pred_tokens or not gold_tokens:
    # No-answer on either side: right only when both say no answer (SQuAD v2.0).
    return float(pred_tokens == gold_tokens)
  same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str] | str) -> float:
  """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
  return max(_exact(prediction, g) for g in _scoring_golds(golds))


def f1_score(prediction: str, golds: Sequence[str] | str) -> float:
  """Token-overlap F1 of the normalised prediction, max over the gold answers (0..1)."""
  return max(_f1(prediction, g) for g in _scoring_golds(golds))


def _best_threshold(answered: np.ndarray, abstained: np.ndarray, probs: np.ndarray, total: int):
  """(best score in percent, threshold) over thresholds t at which a question abstains when prob > t.

  Candidates are "abstain everywhere" and every observed probability; ties keep the smallest threshold,
  as the official find_best_thresh does. Tied probabilities move together: one threshold cannot answer
  one of two questions with the same probability and abstain on the other (the official loop can).
  """
  order = np.argsort(probs, kind="stable")
  values, starts = np.unique(probs[order], return_index=True)
  gain = np.add.reduceat((answered - abstained)[order], starts)  # answering each group instead of abstaining
  scores = abstained.sum() + np.concatenate([[0.0], np.cumsum(gain)])
  best = int(np.argmax(scores))  # first maximum: the smallest threshold
  if best > 0:
    thresh = float(values[best - 1])
  else:
    # Abstain everywhere: the official script reports 0.0, right whenever every probability is above it.
    thresh = 0.0 if values[0] > 0.0 else float(np.nextafter(values[0], -np.inf))
  return 100.0 * float(scores[best]) / total, thresh


def squad_evaluate(
  golds: Mapping[str, Sequence[str]],
  predictions: Mapping[str, str],
  no_answer_probs: Mapping[str, float] | None = None,
  no_answer_threshold: float = 1.0,
) -> dict:
  """SQuAD v1.1 / v2.0 evaluation, percentages as the official scripts print them.

  golds: question id -> gold answer texts; an empty list (or only answers that normalise to nothing)
  marks an unanswerable SQuAD v2.0 question, whose one correct answer is the empty string.
  predictions: question id -> predicted text ("" = no answer). A question with no prediction scores 0
  and is counted in `missing` (SQuAD v1.1's convention; v2.0's script would skip it); predictions for
  ids not in golds are ignored.
  no_answer_probs: question id -> the model's no-answer probability (or any score, higher = more likely
  unanswerable), for every predicted question. A prediction whose probability exceeds
  `no_answer_threshold` is replaced by "" before scoring; the best thresholds for exact and F1 over the
  observed probabilities are reported as best_exact(_thresh) and best_f1(_thresh).

  Returns exact, f1, total, missing; with any unanswerable question also HasAns_exact/f1/total (when there
  are answerable ones) and NoAns_exact/f1/total.

  Differences from the official v2.0 script, all in corner cases it handles inconsistently: a question
  whose gold answers all normalise to nothing (say ["the"]) is NoAns here (the script calls it HasAns but
  scores it as unanswerable); the best-threshold search scores the abstained prediction "" like any other
  (the script tests the raw string, so a prediction "a" on an unanswerable question loses a point there
  yet scores 1 in its own `exact`), and moves questions with tied probabilities together.
  """
  if not golds:
    raise ValueError("squad_evaluate: golds is empty; there is nothing to score")
  qids = list(golds)
  scoring = {q: _scoring_golds(golds[q]) for q in qids}
  has_answer = np.array([scoring[q] != [""] for q in qids])
  present = np.array([q in predictions for q in qids])
  probs = None
  if no_answer_probs is not None:
    lacking = [q for q in qids if q in predictions and q not in no_answer_probs]
    if lacking:
      raise ValueError(
        f"no_answer_probs lacks {len(lacking)} predicted question(s), e.g. {lacking[:5]}; "
        "expected a probability for every predicted question"
      )
    probs = np.array([float(no_answer_probs[q]) if q in predictions else np.nan for q in qids])
    if not np.all(np.isfinite(probs[present])):
      bad = [q for q, p, ok in zip(qids, probs, present) if ok and not math.isfinite(p)]
      raise ValueError(f"no_answer_probs: non-finite values for {bad[:5]}; expected finite numbers")

  # Scores of each question answered as predicted, and abstaining (""); 0 both ways when missing.
  raw = {"exact": np.zeros(len(qids)), "f1": np.zeros(len(qids))}
  empty = {"exact": np.zeros(len(qids)), "f1": np.zeros(len(qids))}
  for i, q in enumerate(qids):
    if q in predictions:
      raw["exact"][i] = exact_match(predictions[q], scoring[q])
      raw["f1"][i] = f1_score(predictions[q], scoring[q])
      empty["exact"][i] = empty["f1"][i] = float(not has_answer[i])

  abstain = np.zeros(len(qids), bool) if probs is None else present & (probs > no_answer_threshold)
  final = {k: np.where(abstain, empty[k], raw[k]) for k in raw}

  def block(mask: np.ndarray, prefix: str = "") -> dict:
    n = int(mask.sum())
    return {
      f"{prefix}exact": 100.0 * float(final["exact"][mask].sum()) / n,
      f"{prefix}f1": 100.0 * float(final["f1"][mask].sum()) / n,
      f"{prefix}total": n,
    }

  result = block(np.ones(len(qids), bool))
  result["missing"] = int((~present).sum())
  if not has_answer.all():
    if has_answer.any():
      result.update(block(has_answer, "HasAns_"))
    result.update(block(~has_answer, "NoAns_"))
  if probs is not None and present.any():
    for k in ("exact", "f1"):
      score, thresh = _best_threshold(raw[k][present], empty[k][present], probs[present], len(qids))
      result[f"best_{k}"], result[f"best_{k}_thresh"] = score, thresh
  return result


# ---------------------------------------------------------------------------------------------------------
# Token tagging: CoNLL entities and POS accuracy

_CHUNK_PREFIXES = ("B-", "I-", "E-", "S-")


def _check_tags(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]):
  """Both as lists of lists of str with matching lengths, or a ValueError naming the sentence."""
  for name, sentences in (("true_tags", true_tags), ("pred_tags", pred_tags)):
    if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
      raise ValueError(
        f"{name}: expected a list of sentences, each a list of tags; got a string in its place"
      )
  true_tags, pred_tags = [list(map(str, s)) for s in true_tags], [list(map(str, s)) for s in pred_tags]
  if len(true_tags) != len(pred_tags):
    raise ValueError(
      f"true_tags has {len(true_tags)} sentences and pred_tags {len(pred_tags)}; expected the same"
    )
  if not true_tags:
    raise ValueError("true_tags and pred_tags are empty; there is nothing to score")
  for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
    if len(t) != len(p):
      raise ValueError(f"sentence {i}: {len(t)} true tags and {len(p)} predicted tags; expected the same")
  return true_tags, pred_tags


def _check_chunk_tags(name: str, sentences: list[list[str]]) -> None:
  for i, sentence in enumerate(sentences):
    for j, tag in enumerate(sentence):
      if tag != "O" and not (tag.startswith(_CHUNK_PREFIXES) and len(tag) > 2):
        raise ValueError(
          f"{name}: sentence {i}, token {j}: tag {tag!r}; expected 'O' or B-/I-/E-/S- and a type, as 'B-PER'"
        )


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
  """Entity-level precision, recall and F1 (fractions) as conlleval counts them, overall and per type.

  An entity is right only when its type, first and last token all match a gold entity. Chunks follow
  conlleval: I-X after O or after another type starts a chunk (so IOB1 and IOB2 both read correctly), a
  type change ends one; sentences never share a chunk. Overall scores are micro-averaged over entities.
  Returns {precision, recall, f1, support (gold entities), per_type: {TYPE: {precision, recall, f1,
  support}}}; a score whose denominator is 0 is 0.0, as in conlleval.
  """
  true_tags, pred_tags = _check_tags(true_tags, pred_tags)
  _check_chunk_tags("true_tags", true_tags)
  _check_chunk_tags("pred_tags", pred_tags)
  types = sorted(
    {t for t, _, _ in sequence_labeling.get_entities(true_tags)}
    | {t for t, _, _ in sequence_labeling.get_entities(pred_tags)}
  )
  prf = sequence_labeling.precision_recall_fscore_support
  p, r, f, s = prf(true_tags, pred_tags, average=None, zero_division=0)
  per_type = {
    t: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
    for k, t in enumerate(types)
  }
  p, r, f, s = prf(true_tags, pred_tags, average="micro", zero_division=0)
  return {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s), "per_type": per_type}


def token_accuracy(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> float:
  """Fraction of tokens tagged right, over all tokens of all sentences (POS tagging)."""
  true_tags, pred_tags = _check_tags(true_tags, pred_tags)
  total = sum(len(s) for s in true_tags)
  if total == 0:
    raise ValueError(f"all {len(true_tags)} sentences are empty; there is nothing to score")
  right = sum(t == p for ts, ps in zip(true_tags, pred_tags) for t, p in zip(ts, ps))
  return right / total
