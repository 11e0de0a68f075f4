"""Fine-tuning metrics against independent references: hand-worked cases, scipy / scikit-learn called
directly, numpy formulas, the SQuAD scripts' definitions, and a conlleval-style chunk counter written here."""

from __future__ import annotations

import math
import string

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from bert_jax import metrics as M

# ---------------------------------------------------------------------------------------------------------
# GLUE metrics: hand-worked cases


def test_accuracy_and_binary_f1_by_hand():
  preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
  # Right at 0, 2, 4: 3/5. Positives: TP at 0 and 4, FP at 1, FN at 3, so P = R = 2/3 and F1 = 2/3.
  assert M.accuracy(preds, labels) == pytest.approx(3 / 5, rel=1e-15)
  assert M.f1(preds, labels) == pytest.approx(2 / 3, rel=1e-15)
  out = M.task_metrics("accuracy_f1", np.array(preds), np.array(labels))
  assert out == pytest.approx(
    {"accuracy": 0.6, "f1": 2 / 3, "accuracy_f1_mean": (0.6 + 2 / 3) / 2}, rel=1e-15
  )


def test_matthews_by_the_2x2_formula():
  # TP=3, TN=4, FP=1, FN=2: MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
  #                             = (12 - 2) / sqrt(4*5*5*6) = 10 / sqrt(600) = 1 / sqrt(6).
  labels = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
  preds = [1, 1, 1, 0, 0, 0, 0, 1, 0, 0]
  assert M.matthews(preds, labels) == pytest.approx(1 / math.sqrt(6), rel=1e-12)
  assert M.task_metrics("matthews", preds, labels) == pytest.approx({"matthews": 1 / math.sqrt(6)}, rel=1e-12)


def test_macro_f1_by_hand():
  labels, preds = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
  # class 0: TP 1, FP 1, FN 1 -> F1 1/2; class 1: TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 4/5;
  # class 2: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3. Mean (1/2 + 4/5 + 2/3) / 3 = 59/90; accuracy 4/6.
  assert M.macro_f1(preds, labels) == pytest.approx(59 / 90, rel=1e-12)
  assert M.task_metrics("macro_f1", preds, labels) == pytest.approx(
    {"accuracy": 4 / 6, "macro_f1": 59 / 90}, rel=1e-12
  )


def test_correlations_by_hand():
  # x = 1,2,3; y = 1,2,4: deviations (-1,0,1) and (-4/3,-1/3,5/3); sum of products 3, sums of squares 2 and
  # 14/3, so r = 3 / sqrt(28/3).
  assert M.pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(28 / 3), rel=1e-12)
  # Ties take their mean rank: x ranks 1, 2.5, 2.5, 4 and y ranks 1, 3, 2, 4. Deviations (-1.5,0,0,1.5) and
  # (-1.5,.5,-.5,1.5): products 4.5, squares 4.5 and 5, so rho = 4.5 / sqrt(22.5) = 3 / sqrt(10).
  assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10), rel=1e-12)
  out = M.task_metrics("pearson_spearman", np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0]))
  r = M.pearson([1, 2, 2, 3], [1, 3, 2, 4])
  assert out["pearson"] == r and out["spearman"] == pytest.approx(3 / math.sqrt(10), rel=1e-12)
  assert out["pearson_spearman_mean"] == pytest.approx((r + 3 / math.sqrt(10)) / 2, rel=1e-15)


# ---------------------------------------------------------------------------------------------------------
# GLUE metrics: random inputs against the libraries called directly and against numpy formulas


def _mcc_formula(labels: np.ndarray, preds: np.ndarray) -> float:
  """Gorodkin's multi-class MCC from the confusion matrix C: (c*s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t))."""
  k = int(max(labels.max(), preds.max())) + 1
  c = np.zeros((k, k))
  np.add.at(c, (labels, preds), 1)
  s, correct, t, p = c.sum(), np.trace(c), c.sum(1), c.sum(0)
  return (correct * s - p @ t) / math.sqrt((s * s - p @ p) * (s * s - t @ t))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_on_random_inputs(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 300)
  preds = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 2, 300))  # a better-than-chance model
  assert M.accuracy(preds, labels) == pytest.approx(skm.accuracy_score(labels, preds), rel=1e-15)
  assert M.f1(preds, labels) == pytest.approx(skm.f1_score(labels, preds), rel=1e-15)
  tp, fp = np.sum((preds == 1) & (labels == 1)), np.sum((preds == 1) & (labels == 0))
  fn = np.sum((preds == 0) & (labels == 1))
  assert M.f1(preds, labels) == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-12)
  assert M.matthews(preds, labels) == pytest.approx(skm.matthews_corrcoef(labels, preds), rel=1e-12)
  assert M.matthews(preds, labels) == pytest.approx(_mcc_formula(labels, preds), rel=1e-12)

  labels = rng.integers(0, 4, 300)
  preds = np.where(rng.random(300) < 0.5, labels, rng.integers(0, 4, 300))
  assert M.matthews(preds, labels) == pytest.approx(_mcc_formula(labels, preds), rel=1e-12)
  assert M.macro_f1(preds, labels) == pytest.approx(skm.f1_score(labels, preds, average="macro"), rel=1e-12)
  per_class = [
    2 * np.sum((preds == k) & (labels == k)) / (np.sum(preds == k) + np.sum(labels == k)) for k in range(4)
  ]
  assert M.macro_f1(preds, labels) == pytest.approx(np.mean(per_class), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_on_random_inputs(seed):
  rng = np.random.default_rng(seed)
  labels = rng.uniform(0, 5, 200)
  preds = labels + rng.normal(0, 1.5, 200)
  preds[:20] = np.round(preds[:20])  # some ties for the rank correlation
  assert M.pearson(preds, labels) == pytest.approx(stats.pearsonr(preds, labels).statistic, rel=1e-12)
  assert M.pearson(preds, labels) == pytest.approx(np.corrcoef(preds, labels)[0, 1], rel=1e-12)
  assert M.spearman(preds, labels) == pytest.approx(stats.spearmanr(preds, labels).statistic, rel=1e-12)
  ranks = np.corrcoef(stats.rankdata(preds), stats.rankdata(labels))[0, 1]  # Spearman = Pearson of ranks
  assert M.spearman(preds, labels) == pytest.approx(ranks, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------
# GLUE metrics: degenerate inputs and errors


@pytest.mark.filterwarnings("error")  # no library warning leaks out either
def test_constant_inputs_score_zero():
  labels = np.array([0, 1, 1, 0, 1])
  assert M.matthews(np.ones(5, int), labels) == 0.0
  assert M.matthews(np.zeros(5, int), np.zeros(5, int)) == 0.0  # one class on both sides
  assert M.pearson(np.full(5, 2.5), labels.astype(float)) == 0.0
  assert M.spearman(labels.astype(float), np.full(5, 2.5)) == 0.0
  assert M.task_metrics("pearson_spearman", np.full(5, 3.0), labels) == {
    "pearson": 0.0,
    "spearman": 0.0,
    "pearson_spearman_mean": 0.0,
  }
  # No positive predicted nor gold: F1's 0/0 is 0.0, as scikit-learn's zero_division=0.
  assert M.f1(np.zeros(4, int), np.zeros(4, int)) == 0.0


@pytest.mark.parametrize(
  "fn", [M.accuracy, M.f1, M.macro_f1, M.matthews, M.pearson, M.spearman], ids=lambda f: f.__name__
)
def test_bad_inputs_are_clear_errors(fn):
  with pytest.raises(ValueError, match="empty"):
    fn([], [])
  with pytest.raises(ValueError, match="3 values .* 2"):
    fn([0, 1, 1], [0, 1])
  with pytest.raises(ValueError, match=r"shape \(2, 2\).*argmax"):
    fn(np.zeros((2, 2)), np.zeros(2))


def test_other_errors():
  with pytest.raises(ValueError, match=r"binary f1: labels hold \[2\]"):
    M.f1([0, 1, 1], [0, 2, 1])
  with pytest.raises(ValueError, match="at least 2 values"):
    M.pearson([1.0], [2.0])
  with pytest.raises(ValueError, match=r"'glue_score'.*\['accuracy', 'accuracy_f1', 'macro_f1'"):
    M.task_metrics("glue_score", [0], [0])
  assert {"accuracy", "accuracy_f1", "matthews", "pearson_spearman", "macro_f1"} <= set(M.TASK_METRICS)


# ---------------------------------------------------------------------------------------------------------
# SQuAD: normalisation and per-answer scores


@pytest.mark.parametrize(
  "text, expected",
  [
    ("The Cat", "cat"),
    ("An apple, a pear and THE plum!", "apple pear and plum"),
    ("theater and another anthem", "theater and another anthem"),  # articles only as whole words
    ("  many\t spaces\n here ", "many spaces here"),
    ("new\u00a0york", "new york"),  # str.split() counts no-break space as whitespace
    ("the-cat", "thecat"),  # punctuation goes before articles, so "the" is no longer a word
    ("$1,000.50", "100050"),
    ("¿Qué?", "¿qué"),  # only ASCII punctuation goes: ¿ stays, ? goes
    ("«the» end—", "« » end—"),  # « » and the em dash stay, and bound "the" as a word, which goes
    ("ãthe", "ãthe"),  # \b is Unicode-aware: "the" after a letter ã is not a word
    ("a", ""),
  ],
)
def test_normalize_answer(text, expected):
  assert M.normalize_answer(text) == expected


def test_normalize_strips_exactly_ascii_punctuation():
  assert M.normalize_answer("x" + string.punctuation + "y") == "xy"
  unicode_punct = "¡¿«»‹›“”‘’–—…·、。「」"
  assert M.normalize_answer("x" + unicode_punct + "y") == "x" + unicode_punct + "y"


def test_squad_answer_scores_by_hand():
  # "the big cat" -> [big, cat]. Against "a cat" -> [cat]: 1 common, P 1/2, R 1, F1 2/3. Against
  # "big dog": 1 common, P = R = 1/2, F1 1/2. The max over golds is 2/3; no gold matches exactly.
  assert M.f1_score("the big cat", ["a cat", "big dog"]) == pytest.approx(2 / 3, rel=1e-15)
  assert M.exact_match("the big cat", ["a cat", "big dog"]) == 0.0
  assert M.exact_match("Cat.", ["dog", "the cat"]) == 1.0
  # Token counts are a multiset: "x x x" vs "x" shares one token, P 1/3, R 1, F1 1/2.
  assert M.f1_score("x x x", ["x"]) == pytest.approx(0.5, rel=1e-15)
  # Repeats count as often as both sides have them: "x x" vs "x x y" shares 2, P 1, R 2/3, F1 4/5 (a set
  # overlap would share 1 and give 2/5).
  assert M.f1_score("x x", ["x x y"]) == pytest.approx(0.8, rel=1e-15)
  assert M.f1_score("x", "x y") == pytest.approx(2 / 3, rel=1e-15)  # a bare string is one gold answer


def test_squad_no_answer_scores():
  # SQuAD v2.0: an empty gold list means "no answer"; F1 is 1 when both sides normalise to nothing, else 0.
  for fn in (M.exact_match, M.f1_score):
    assert fn("", []) == 1.0
    assert fn("", [""]) == 1.0
    assert fn("The.", []) == 1.0  # normalises to nothing: an abstention
    assert fn("cat", []) == 0.0
    assert fn("", ["cat"]) == 0.0
    # Gold answers that normalise to nothing are dropped when a real one exists (v2.0's get_raw_scores).
    assert fn("a", ["the", "cat"]) == 0.0


# ---------------------------------------------------------------------------------------------------------
# SQuAD: whole evaluation

GOLDS = {
  "q1": ["Denver Broncos", "the Broncos"],
  "q2": ["Santa Clara, California"],
  "q3": [],
  "q4": [],
  "q5": ["1967"],
}
PREDS = {"q1": "Broncos", "q2": "Santa Clara", "q3": "", "q4": "Levi's Stadium"}  # q5 missing
PROBS = {"q1": 0.1, "q2": 0.2, "q4": 0.3, "q3": 0.9}


def test_squad_evaluate_by_hand():
  # Per question (exact, f1): q1 (1, 1) via "the Broncos"; q2 (0, 0.8): P 1, R 2/3; q3 (1, 1) empty vs no
  # answer; q4 (0, 0) an answer to an unanswerable question; q5 missing (0, 0).
  out = M.squad_evaluate(GOLDS, PREDS)
  expected = {
    "exact": 100 * 2 / 5,
    "f1": 100 * 2.8 / 5,
    "total": 5,
    "missing": 1,
    "HasAns_exact": 100 * 1 / 3,
    "HasAns_f1": 100 * 1.8 / 3,
    "HasAns_total": 3,
    "NoAns_exact": 100 * 1 / 2,
    "NoAns_f1": 100 * 1 / 2,
    "NoAns_total": 2,
  }
  assert out == pytest.approx(expected, rel=1e-12)


def test_squad_v1_has_no_split():
  golds = {"a": ["x y"], "b": ["z"]}
  # "x" vs "x y": P 1, R 1/2, F1 2/3; "z" exact.
  assert M.squad_evaluate(golds, {"a": "x", "b": "z"}) == pytest.approx(
    {"exact": 50.0, "f1": 100 * (2 / 3 + 1) / 2, "total": 2, "missing": 0}, rel=1e-12
  )


def test_squad_best_threshold_by_hand():
  # A question abstains ("" predicted) when its no-answer probability exceeds the threshold. In probability
  # order q1 .1, q2 .2, q4 .3, q3 .9 (q5 missing scores 0 throughout; percentages are out of 5):
  #   answered (exact, f1): q1 (1, 1), q2 (0, .8), q4 (0, 0), q3 (1, 1)
  #   abstaining:           q1 (0, 0), q2 (0, 0),  q4 (1, 1), q3 (1, 1)
  # exact: all abstain 2; t=.1 -> 3; t=.2 -> 3 (tie keeps .1); t=.3 -> 2; t=.9 -> 2. Best 60% at .1.
  # f1:    all abstain 2; t=.1 -> 3; t=.2 -> 3.8; t=.3 -> 2.8; t=.9 -> 2.8.       Best 76% at .2.
  out = M.squad_evaluate(GOLDS, PREDS, PROBS)
  assert out["best_exact"] == pytest.approx(60.0, rel=1e-12) and out["best_exact_thresh"] == 0.1
  assert out["best_f1"] == pytest.approx(76.0, rel=1e-12) and out["best_f1_thresh"] == 0.2
  # The default threshold 1.0 changes nothing here; at .25, q4 (.3) and q3 (.9) abstain: exact 3/5, f1 3.8/5.
  assert out["exact"] == pytest.approx(40.0, rel=1e-12)
  at = M.squad_evaluate(GOLDS, PREDS, PROBS, no_answer_threshold=0.25)
  assert at["exact"] == pytest.approx(60.0, rel=1e-12) and at["f1"] == pytest.approx(76.0, rel=1e-12)
  assert at["NoAns_exact"] == 100.0 and at["HasAns_f1"] == pytest.approx(100 * 1.8 / 3, rel=1e-12)
  # A probability equal to the threshold does not exceed it: at .3, q4 answers (0) and only q3 abstains.
  at = M.squad_evaluate(GOLDS, PREDS, PROBS, no_answer_threshold=0.3)
  assert at["exact"] == pytest.approx(40.0, rel=1e-12) and at["NoAns_exact"] == 50.0


def test_squad_best_threshold_ties_and_zero_probability():
  golds = {"a": ["x"], "b": []}
  preds = {"a": "x", "b": "y"}
  # Equal probabilities: no threshold answers "a" (+1) while abstaining on "b" (keeps 1). Abstaining on both
  # scores 1 ("b"), answering both 1 ("a"): the tie keeps the smaller threshold, 50% at 0.0.
  out = M.squad_evaluate(golds, preds, {"a": 0.5, "b": 0.5})
  assert (out["best_exact"], out["best_exact_thresh"]) == (50.0, 0.0)
  # With probability 0.0, abstaining everywhere needs a threshold below 0; the one reported must reproduce it.
  out = M.squad_evaluate({"b": []}, {"b": "y"}, {"b": 0.0})
  assert out["best_exact"] == 100.0 and out["best_exact_thresh"] < 0.0
  at = M.squad_evaluate({"b": []}, {"b": "y"}, {"b": 0.0}, no_answer_threshold=out["best_exact_thresh"])
  assert at["exact"] == 100.0


@pytest.mark.parametrize("seed", [0, 1])
def test_squad_best_threshold_is_the_best_threshold(seed):
  """best_* equals the brute-force maximum of squad_evaluate over every candidate threshold."""
  rng = np.random.default_rng(seed)
  words = ["the", "red", "cat", "sat", "on", "a", "mat", "dog"]

  def phrase():
    return " ".join(rng.choice(words, rng.integers(1, 4)))

  golds = {
    f"q{i}": ([] if rng.random() < 0.4 else [phrase() for _ in range(rng.integers(1, 3))]) for i in range(40)
  }
  preds = {q: ("" if rng.random() < 0.3 else phrase()) for q in golds if rng.random() < 0.9}
  probs = {q: float(np.round(rng.random(), 1)) for q in preds}  # rounded: many ties
  out = M.squad_evaluate(golds, preds, probs)
  candidates = sorted(set(probs.values()))
  candidates = [min(0.0, float(np.nextafter(candidates[0], -np.inf)))] + candidates
  for key in ("exact", "f1"):
    scores = [M.squad_evaluate(golds, preds, probs, no_answer_threshold=t)[key] for t in candidates]
    best = int(np.argmax(scores))  # the first maximum: the smallest threshold
    assert out[f"best_{key}"] == pytest.approx(scores[best], rel=1e-12)
    at = M.squad_evaluate(golds, preds, probs, no_answer_threshold=out[f"best_{key}_thresh"])
    assert at[key] == pytest.approx(scores[best], rel=1e-12)
  # The totals are means of the per-question scores, missing questions 0.
  per_q = [M.f1_score(preds[q], golds[q]) if q in preds else 0.0 for q in golds]
  assert M.squad_evaluate(golds, preds)["f1"] == pytest.approx(100 * np.mean(per_q), rel=1e-12)
  assert M.squad_evaluate(golds, preds)["missing"] == len(golds) - len(preds)


def test_squad_errors():
  with pytest.raises(ValueError, match=r"lacks 1 predicted question\(s\), e.g. \['q4'\]"):
    M.squad_evaluate(GOLDS, PREDS, {"q1": 0.1, "q2": 0.2, "q3": 0.9})
  with pytest.raises(ValueError, match=r"non-finite values for \['q1'\]"):
    M.squad_evaluate(GOLDS, PREDS, dict(PROBS, q1=float("nan")))
  with pytest.raises(ValueError, match="golds is empty"):
    M.squad_evaluate({}, {})


# ---------------------------------------------------------------------------------------------------------
# Entity-level scores


def _chunks(sentences: list[list[str]]) -> set[tuple[int, int, int, str]]:
  """(sentence, first, last, type) of every chunk, by conlleval's reading of IOB1 and IOB2.

  A chunk starts at B-X, or at I-X unless the token before is inside a chunk of type X; it goes on over I-X
  of its own type, and ends at O, at B-, at a type change and at the end of the sentence.
  """
  found = set()
  for s, tags in enumerate(sentences):
    open_type, start = None, 0
    for i, tag in enumerate(tags + ["O"]):
      prefix, kind = (tag[0], tag[2:]) if tag != "O" else ("O", None)
      continues = prefix == "I" and kind == open_type
      if open_type is not None and not continues:
        found.add((s, start, i - 1, open_type))
        open_type = None
      if prefix in "BI" and not continues:
        open_type, start = kind, i
  return found


def _reference_scores(true_tags, pred_tags) -> dict:
  gold, guess = _chunks(true_tags), _chunks(pred_tags)

  def prf(g, p):
    right = len(g & p)
    precision = right / len(p) if p else 0.0
    recall = right / len(g) if g else 0.0
    f = 2 * precision * recall / (precision + recall) if right else 0.0
    return {"precision": precision, "recall": recall, "f1": f, "support": len(g)}

  types = {c[3] for c in gold | guess}
  out = prf(gold, guess)
  out["per_type"] = {t: prf({c for c in gold if c[3] == t}, {c for c in guess if c[3] == t}) for t in types}
  return out


def test_entity_scores_by_hand():
  true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"]]
  pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O", "B-PER"]]
  # Gold: PER 0:0-1, LOC 0:3, ORG 1:0-2, PER 1:4. Predicted: PER 0:0-1, ORG 0:3, ORG 1:0-1 (short), PER 1:4.
  # Right: both PERs. PER P 2/2 R 2/2; LOC none predicted (P 0) R 0/1; ORG P 0/2 R 0/1. Overall 2/4, 2/4.
  out = M.entity_scores(true, pred)
  assert out == {
    "precision": 0.5,
    "recall": 0.5,
    "f1": 0.5,
    "support": 4,
    "per_type": {
      "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
      "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
      "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2},
    },
  }


def test_entity_scores_iob1_and_boundaries():
  # IOB1: I- opens a chunk at the start, after O and after another type; B- only splits two adjacent chunks
  # of one type. Gold PER 0-1, PER 2, LOC 4, ORG 5 in IOB1 equals the same chunks in IOB2.
  iob1 = [["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]]
  iob2 = [["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]]
  assert M.entity_scores(iob1, iob2)["f1"] == 1.0
  # Read without the B- split, PER 0-2 and LOC 4-5 match none of the 4 gold chunks.
  out = M.entity_scores(iob1, [["I-PER", "I-PER", "I-PER", "O", "I-LOC", "I-LOC"]])
  assert (out["precision"], out["recall"], out["support"]) == (0.0, 0.0, 4)
  # A chunk never runs across sentences: I-PER opening sentence 2 is a new chunk (2 gold, both found).
  assert M.entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])["f1"] == 1.0


TAGS = ["O"] + [f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG", "MISC")]


def _random_tags(rng, n_sentences: int) -> list[list[str]]:
  """Sentences of 0..15 tags, O as likely as all entity tags together, so chunks are short and varied."""
  weights = np.array([8.0] + [1.0] * 8) / 16
  return [[str(t) for t in rng.choice(TAGS, rng.integers(0, 16), p=weights)] for _ in range(n_sentences)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_entity_scores_match_a_conlleval_chunk_counter(seed):
  rng = np.random.default_rng(seed)
  true = _random_tags(rng, 150)
  # A noisy tagger: a quarter of the tags redrawn, which moves boundaries, changes types and splits chunks.
  pred = [[t if rng.random() < 0.75 else str(rng.choice(TAGS)) for t in s] for s in true]
  out, ref = M.entity_scores(true, pred), _reference_scores(true, pred)
  assert ref["support"] > 100 and 0.2 < ref["f1"] < 0.9  # a test that exercises both hits and misses
  assert set(out["per_type"]) == set(ref["per_type"])
  for key in ("precision", "recall", "f1"):
    assert out[key] == pytest.approx(ref[key], rel=1e-12, abs=0)
    for t in ref["per_type"]:
      assert out["per_type"][t][key] == pytest.approx(ref["per_type"][t][key], rel=1e-12, abs=0)
  assert out["support"] == ref["support"]
  assert {t: v["support"] for t, v in out["per_type"].items()} == {
    t: v["support"] for t, v in ref["per_type"].items()
  }


def test_entity_scores_errors():
  with pytest.raises(ValueError, match="sentence 1: 3 true tags and 2 predicted tags"):
    M.entity_scores([["O"], ["O", "B-PER", "I-PER"]], [["O"], ["O", "B-PER"]])
  with pytest.raises(ValueError, match="2 sentences and pred_tags 1"):
    M.entity_scores([["O"], ["O"]], [["O"]])
  with pytest.raises(ValueError, match="empty"):
    M.entity_scores([], [])
  with pytest.raises(ValueError, match="pred_tags: expected a list of sentences"):
    M.entity_scores([["B-PER"]], ["B-PER"])
  with pytest.raises(ValueError, match=r"pred_tags: sentence 0, token 1: tag 'PER'"):
    M.entity_scores([["O", "B-PER"]], [["O", "PER"]])


def test_token_accuracy():
  # 6 tokens, 4 right (the two mistakes are the NN/VB swap).
  true = [["DT", "NN", "VB"], ["NN", "VB", "."]]
  pred = [["DT", "VB", "VB"], ["NN", "NN", "."]]
  assert M.token_accuracy(true, pred) == pytest.approx(4 / 6, rel=1e-15)
  rng = np.random.default_rng(0)
  true = [list(rng.choice(["NN", "VB", "DT"], rng.integers(0, 10))) for _ in range(50)]
  pred = [[t if rng.random() < 0.8 else "JJ" for t in s] for s in true]
  flat_t, flat_p = (
    np.concatenate([np.array(s, object) for s in true]),
    np.concatenate([np.array(s, object) for s in pred]),
  )
  assert M.token_accuracy(true, pred) == pytest.approx(skm.accuracy_score(flat_t, flat_p), rel=1e-12)
  with pytest.raises(ValueError, match="all 2 sentences are empty"):
    M.token_accuracy([[], []], [[], []])
  with pytest.raises(ValueError, match="sentence 0: 1 true tags and 2 predicted tags"):
    M.token_accuracy([["NN"]], [["NN", "VB"]])
