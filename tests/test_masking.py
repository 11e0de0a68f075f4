"""MLM masking on real text: rates, the 80/10/10 split, whole words, spans, static/dynamic, features."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from bert_jax.data import instances as inst
from bert_jax.data import masking
from bert_jax.data.masking import MaskingConfig
from bert_jax.tokenization import Tokenizer
from tests import helpers

PAD, CLS, SEP, MASK = 0, 101, 102, 103  # the MiniLM (uncased BERT) vocab's ids, checked in the fixture
SPECIALS = (PAD, CLS, SEP, MASK)
MAX_LEN = 128


@pytest.fixture(scope="module")
def tokenizer(minilm_dir) -> Tokenizer:
  tok = Tokenizer.from_vocab(os.path.join(minilm_dir, "vocab.txt"))
  assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == SPECIALS
  return tok


@pytest.fixture(scope="module")
def lookups(tokenizer):
  is_special, is_continuation = masking.vocab_lookups(tokenizer.vocab)
  assert sorted(np.flatnonzero(is_special)) == sorted(SPECIALS)
  assert is_continuation.sum() == sum(t.startswith("##") for t in tokenizer.vocab) > 5000
  return is_special, is_continuation


@pytest.fixture(scope="module")
def instances(tokenizer):
  """NSP instances of up to 128 tokens from the sample texts (lines as sentences, 5 to a document)."""
  docs = helpers.sample_documents(tokenizer, SPECIALS)
  out = inst.create_all_instances(docs, dupe_factor=8, seed=0, max_seq_length=MAX_LEN, cls_id=CLS, sep_id=SEP)
  assert len(out) > 60
  return out


def run(tokenizer, lookups, tokens, config, rng, **kwargs):
  is_special, is_continuation = lookups
  return masking.mask_instance(
    tokens,
    config=config,
    vocab_size=tokenizer.vocab_size,
    mask_id=MASK,
    special_ids=is_special,
    is_continuation=is_continuation,
    rng=rng,
    **kwargs,
  )


def words_of(tokens: np.ndarray, is_continuation: np.ndarray) -> list[np.ndarray]:
  """Whole words among the non-special tokens: a piece and the ## pieces right after it."""
  words, current = [], []
  for p, t in enumerate(tokens):
    if t in SPECIALS:
      if current:
        words.append(current)
      current = []
    elif is_continuation[t] and current:
      current.append(p)
    else:
      if current:
        words.append(current)
      current = [p]
  if current:
    words.append(current)
  return [np.array(w) for w in words]


def check_output(out, tokens, config, max_len=None):
  """The invariants every mode keeps; returns the masked positions."""
  n = int(out["masked_weights"].sum())
  positions = out["masked_positions"][:n]
  assert out["input_ids"].dtype == np.int32 and len(out["input_ids"]) == (max_len or len(tokens))
  for key, dtype in (
    ("masked_positions", np.int32),
    ("masked_ids", np.int32),
    ("masked_weights", np.float32),
  ):
    assert out[key].dtype == dtype and out[key].shape == (config.max_predictions,)
  np.testing.assert_array_equal(
    out["masked_weights"], np.r_[np.ones(n), np.zeros(config.max_predictions - n)]
  )
  assert (np.diff(positions) > 0).all(), "ascending, no position twice"
  assert not (out["masked_positions"][n:].any() or out["masked_ids"][n:].any()), "empty slots are zeros"
  np.testing.assert_array_equal(out["masked_ids"][:n], tokens[positions])
  assert not np.isin(tokens[positions], SPECIALS).any(), "[CLS], [SEP], [PAD], [MASK] are never predicted"
  unmasked = np.setdiff1d(np.arange(len(tokens)), positions)
  np.testing.assert_array_equal(out["input_ids"][unmasked], tokens[unmasked])
  if max_len:
    assert (out["input_ids"][len(tokens) :] == PAD).all()
  return positions


def budget(n_maskable: int, rate: float, cap: int) -> int:
  return min(cap, max(1, int(np.floor(n_maskable * rate + 0.5))))


def classify(out, tokens, positions) -> tuple[int, int, int, np.ndarray]:
  """(# [MASK], # random, # kept, the random ids) at the masked positions."""
  seen = out["input_ids"][positions]
  is_mask = seen == MASK
  kept = seen == tokens[positions]
  random = ~is_mask & ~kept
  return int(is_mask.sum()), int(random.sum()), int(kept.sum()), seen[random]


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_token_masking_rate_split_and_specials(tokenizer, lookups, instances):
  config = MaskingConfig()
  repeats = 20
  chosen = maskable = 0
  split = np.zeros(3, int)
  randoms = []
  max_z = 0.0
  for i, x in enumerate(instances):
    tokens = x["tokens"]
    n_maskable = int((~np.isin(tokens, SPECIALS)).sum())
    k = budget(n_maskable, 0.15, 20)
    hits = np.zeros(len(tokens))
    for r in range(repeats):
      out = run(tokenizer, lookups, tokens, config, np.random.default_rng([i, r]), max_seq_length=MAX_LEN)
      positions = check_output(out, tokens, config, MAX_LEN)
      assert len(positions) == k == config.num_predictions(n_maskable)
      hits[positions] += 1
      chosen += k
      maskable += n_maskable
      m, rnd, kept, ids = classify(out, tokens, positions)
      split += (m, rnd, kept)
      randoms.append(ids)
    # Every maskable position is equally likely: Binomial(repeats, k / n) counts.
    p = k / n_maskable
    z = (hits[~np.isin(tokens, SPECIALS)] - repeats * p) / np.sqrt(repeats * p * (1 - p))
    max_z = max(max_z, np.abs(z).max())
  assert max_z < 5.5, max_z
  rate = chosen / maskable
  # The budget rounds 15% of each sequence's maskable tokens, so the rate is 0.15 up to that rounding.
  assert abs(rate - 0.15) < 0.5 * len(instances) * repeats / maskable, rate
  total = split.sum()
  assert total == chosen
  assert within(split[0], total, 0.8) and within(split[1], total, 0.1) and within(split[2], total, 0.1), split
  randoms = np.concatenate(randoms)
  assert not np.isin(randoms, SPECIALS).any()
  # Uniform over the vocab without specials: mean and spread of a discrete uniform on [0, 30522).
  v = tokenizer.vocab_size
  assert abs(randoms.mean() - (v - 1) / 2) < 5 * v / np.sqrt(12 * len(randoms)), randoms.mean()
  assert abs(randoms.std() - v / np.sqrt(12)) < 0.05 * v / np.sqrt(12)


def test_cap_padding_and_budget_rounding(tokenizer, lookups, instances):
  config = MaskingConfig(rate=0.5, max_predictions=12)
  long = [x for x in instances if len(x["tokens"]) > 100]
  assert long
  for i, x in enumerate(long):
    padded = np.r_[x["tokens"], np.full(MAX_LEN - len(x["tokens"]), PAD)]
    out = run(tokenizer, lookups, padded, config, np.random.default_rng(i))
    positions = check_output(out, padded, config)
    assert len(positions) == 12 and positions.max() < len(x["tokens"]), (
      "the cap holds; padding is never masked"
    )
  # Halves round up; at least one prediction; never more than there is to mask.
  assert MaskingConfig(rate=0.25).num_predictions(10) == 3
  assert MaskingConfig(rate=0.25).num_predictions(2) == 1
  assert MaskingConfig(rate=1.0).num_predictions(3) == 3
  assert MaskingConfig().num_predictions(0) == 0
  out = run(tokenizer, lookups, np.array([CLS, SEP, PAD]), MaskingConfig(), np.random.default_rng(0))
  assert out["masked_weights"].sum() == 0 and list(out["input_ids"]) == [CLS, SEP, PAD]


def test_whole_word_masking_never_splits_a_word(tokenizer, lookups, instances):
  _, is_continuation = lookups
  config = MaskingConfig(mode="whole_word")
  chosen = wanted = pieces_masked = mixed_words = 0
  split = np.zeros(3, int)
  for i, x in enumerate(instances):
    tokens = x["tokens"]
    words = words_of(tokens, is_continuation)
    k = budget(sum(len(w) for w in words), 0.15, 20)
    for r in range(10):
      out = run(tokenizer, lookups, tokens, config, np.random.default_rng([i, r]))
      positions = set(check_output(out, tokens, config).tolist())
      assert len(positions) <= k
      for w in words:
        hit = [p in positions for p in w]
        assert all(hit) or not any(hit), f"word at {w} split"
        if all(hit) and len(w) > 1:
          pieces_masked += 1
          seen = out["input_ids"][w]
          mixed_words += (seen == MASK).any() and not (seen == MASK).all()
      chosen += len(positions)
      wanted += k
      split += classify(out, tokens, np.array(sorted(positions)))[:3]
  assert pieces_masked > 200  # multi-piece words do get masked
  # BERT decides [MASK]/random/keep per piece, so some words come out partly [MASK].
  assert mixed_words > 0.1 * pieces_masked
  assert chosen <= wanted and chosen > 0.95 * wanted, chosen / wanted  # skipping words rarely costs much
  total = split.sum()
  assert within(split[0], total, 0.8) and within(split[1], total, 0.1) and within(split[2], total, 0.1), split


@pytest.mark.parametrize("span_p, span_max", [(0.2, 10), (0.5, 4)])
def test_span_masking_lengths_follow_the_truncated_geometric(tokenizer, lookups, instances, span_p, span_max):
  _, is_continuation = lookups
  config = MaskingConfig(mode="span", span_p=span_p, span_max=span_max, max_predictions=40, rate=0.2)
  drawn, placed_eq, n_spans, chosen, wanted = [], 0, 0, 0, 0
  for i, x in enumerate(instances):
    tokens = x["tokens"]
    words = words_of(tokens, is_continuation)
    starts = {int(w[0]) for w in words}
    ends = {int(w[-1]) + 1 for w in words}
    word_at = {int(p): j for j, w in enumerate(words) for p in w}
    k = budget(sum(len(w) for w in words), config.rate, config.max_predictions)
    for r in range(8):
      out = run(tokenizer, lookups, tokens, config, np.random.default_rng([i, r, 1]))
      positions = check_output(out, tokens, config)
      spans = out["spans"]
      covered = np.concatenate([np.arange(a, b) for a, b, _ in spans])
      np.testing.assert_array_equal(np.sort(covered), positions)  # spans tile the masked positions
      for a, b, d in spans:
        assert a in starts and b in ends, "a span is whole words"
        assert word_at[a] <= word_at[b - 1] and not np.isin(tokens[a:b], SPECIALS).any(), (
          "one stretch of text"
        )
        n_words = word_at[b - 1] - word_at[a] + 1
        assert 1 <= n_words <= d <= span_max
        placed_eq += n_words == d
        seen = out["input_ids"][a:b]
        assert (seen == MASK).all() or not (seen == MASK).any(), "one decision per span (SpanBERT)"
      drawn += list(spans[:, 2])
      n_spans += len(spans)
      chosen += len(positions)
      wanted += k
  drawn = np.array(drawn)
  pmf = config.span_length_pmf()
  lengths = np.arange(1, span_max + 1)
  expected = len(drawn) * pmf
  observed = np.bincount(drawn, minlength=span_max + 1)[1:]
  chi2 = ((observed - expected) ** 2 / expected).sum()
  # 99.99th percentile of chi-square with 9 (3) degrees of freedom is 33.7 (21.1).
  assert chi2 < (33.7 if span_max == 10 else 21.1), (chi2, observed, expected.round())
  mean, sd = (lengths * pmf).sum(), np.sqrt((lengths**2 * pmf).sum() - (lengths * pmf).sum() ** 2)
  assert abs(drawn.mean() - mean) < 5 * sd / np.sqrt(len(drawn))
  if span_max == 10:
    assert abs(mean - 3.8) < 0.01  # SpanBERT's reported mean span length
  assert chosen <= wanted and chosen > 0.97 * wanted, chosen / wanted
  assert placed_eq > 0.6 * n_spans, placed_eq / n_spans  # most spans get their whole drawn length


def test_static_and_dynamic_masking(tokenizer, lookups, instances):
  tokens = instances[3]["tokens"]
  config = MaskingConfig(mode="whole_word")

  def masks(rng):
    out = run(tokenizer, lookups, tokens, config, rng)
    return out["masked_positions"].tolist(), out["input_ids"].tolist()

  static = masks(masking.masking_rng(7, 3))
  assert static == masks(masking.masking_rng(7, 3)), "static: same seed and index, same masks every time"
  assert static != masks(masking.masking_rng(7, 4))
  assert static != masks(masking.masking_rng(8, 3))
  epochs = [masks(masking.masking_rng(7, 3, epoch=e)) for e in range(5)]
  assert epochs[2] == masks(masking.masking_rng(7, 3, epoch=2))
  assert len({str(e) for e in epochs}) == 5, "dynamic: fresh masks each epoch"
  assert static not in epochs, (
    "epoch 0 is not the static mask (SeedSequence would equate [7, 3] and [7, 3, 0])"
  )


def test_batch_features(tokenizer, lookups, instances):
  config = MaskingConfig()
  rows = []
  for i, x in enumerate(instances[:6]):
    rows.append({**x, **run(tokenizer, lookups, x["tokens"], config, masking.masking_rng(0, i))})
  batch = masking.batch_features(rows, MAX_LEN)
  assert set(batch) == {
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "masked_positions",
    "masked_ids",
    "masked_weights",
    "nsp_labels",
  }
  assert batch["input_ids"].shape == (6, MAX_LEN) and batch["masked_ids"].shape == (6, 20)
  assert all(v.dtype == (np.float32 if k == "masked_weights" else np.int32) for k, v in batch.items())
  for r, x in enumerate(rows):
    n = len(x["tokens"])
    assert batch["attention_mask"][r].sum() == n and batch["attention_mask"][r, :n].all()
    np.testing.assert_array_equal(batch["input_ids"][r, :n], x["input_ids"])
    assert not batch["input_ids"][r, n:].any() and not batch["token_type_ids"][r, n:].any()
    np.testing.assert_array_equal(batch["token_type_ids"][r, :n], x["token_type_ids"])
    assert batch["nsp_labels"][r] == x["pair_label"]
  # Masked positions gather the right labels from the padded batch.
  orig = np.stack([np.r_[x["tokens"], np.zeros(MAX_LEN - len(x["tokens"]), int)] for x in rows])
  real = batch["masked_weights"] > 0
  np.testing.assert_array_equal(
    np.take_along_axis(orig, batch["masked_positions"], 1)[real], batch["masked_ids"][real]
  )


def test_batch_features_packed(tokenizer, lookups, instances):
  docs = [[x["tokens"][1 : np.flatnonzero(x["tokens"] == SEP)[0]]] for x in instances[:12]]  # the A segments
  packed = inst.pack_documents(docs, max_seq_length=MAX_LEN, cls_id=CLS, sep_id=SEP)
  rows = [
    {**x, **run(tokenizer, lookups, x["tokens"], MaskingConfig(), masking.masking_rng(1, i))}
    for i, x in enumerate(packed)
  ]
  batch = masking.batch_features(rows, MAX_LEN)
  assert "nsp_labels" not in batch and {"segment_ids", "position_ids"} <= set(batch)
  for r, x in enumerate(rows):
    n = len(x["tokens"])
    np.testing.assert_array_equal(batch["segment_ids"][r, :n], x["segment_ids"])
    np.testing.assert_array_equal(batch["position_ids"][r, :n], x["position_ids"])
    assert not batch["segment_ids"][r, n:].any() and not batch["position_ids"][r, n:].any()
  # Every packed document's [CLS] stays unmasked, whatever segment it starts.
  assert (
    np.take_along_axis(batch["input_ids"], batch["masked_positions"], 1)[batch["masked_weights"] > 0] != CLS
  ).all()


def test_config_errors():
  cases = [
    (
      {"mode": "bpe"},
      ValueError,
      r"MaskingConfig.mode='bpe'; expected one of \['token', 'whole_word', 'span'\]",
    ),
    ({"rate": 0.0}, ValueError, r"MaskingConfig.rate=0.0; expected a fraction in \(0, 1\]"),
    ({"rate": 1.5}, ValueError, r"MaskingConfig.rate=1.5; expected a fraction in \(0, 1\]"),
    (
      {"max_predictions": 0},
      ValueError,
      r"MaskingConfig.max_predictions=0 is too small; expected an integer >= 1",
    ),
    (
      {"max_predictions": 2.0},
      TypeError,
      r"MaskingConfig.max_predictions=2.0 is a float; expected an integer",
    ),
    (
      {"replace_with_mask": -0.1},
      ValueError,
      r"MaskingConfig.replace_with_mask=-0.1; expected a probability",
    ),
    (
      {"replace_with_random": 1.1},
      ValueError,
      r"MaskingConfig.replace_with_random=1.1; expected a probability",
    ),
    (
      {"replace_with_mask": 0.8, "replace_with_random": 0.3},
      ValueError,
      r"replace_with_mask \+ replace_with_random = 0.8 \+ 0.3 > 1; expected at most 1",
    ),
    ({"span_p": 0.0}, ValueError, r"MaskingConfig.span_p=0.0; expected a geometric parameter in \(0, 1\]"),
    (
      {"span_max": 0},
      ValueError,
      r"MaskingConfig.span_max=0 is too small; expected an integer >= 1 \(words\)",
    ),
  ]
  for kwargs, error, message in cases:
    with pytest.raises(error, match=message):
      MaskingConfig(**kwargs)
  config = MaskingConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.rate = 0.2  # type: ignore[misc]


def test_mask_instance_errors(tokenizer, lookups):
  is_special, _ = lookups
  tokens = np.array([CLS, 2023, 2003, SEP])
  rng = np.random.default_rng(0)
  v = tokenizer.vocab_size
  kw = {"vocab_size": v, "mask_id": MASK, "rng": rng}
  with pytest.raises(
    ValueError, match=r"mode='whole_word' needs is_continuation \(a boolean array over the vocab"
  ):
    masking.mask_instance(tokens, config=MaskingConfig(mode="whole_word"), special_ids=is_special, **kw)
  with pytest.raises(ValueError, match=r"tokens hold id 30522, outside the vocabulary of 30522 ids"):
    masking.mask_instance([CLS, v, SEP], config=MaskingConfig(), special_ids=is_special, **kw)
  with pytest.raises(
    ValueError, match=r"tokens must be a 1-D sequence of integer token ids; got shape \(2, 2\)"
  ):
    masking.mask_instance(np.zeros((2, 2), int), config=MaskingConfig(), special_ids=is_special, **kw)
  with pytest.raises(
    ValueError, match=r"special_ids has shape \(10,\); expected a boolean array of shape \(30522,\)"
  ):
    masking.mask_instance(tokens, config=MaskingConfig(), special_ids=np.zeros(10, bool), **kw)
  with pytest.raises(ValueError, match=r"special_ids holds id 99999, outside the vocabulary of 30522 ids"):
    masking.mask_instance(tokens, config=MaskingConfig(), special_ids={CLS, SEP, 99999}, **kw)
  with pytest.raises(ValueError, match=r"is_continuation has shape \(3,\); expected a boolean array"):
    masking.mask_instance(
      tokens,
      config=MaskingConfig(mode="span"),
      special_ids=is_special,
      is_continuation=np.ones(3, bool),
      **kw,
    )
  with pytest.raises(ValueError, match=r"tokens have 4 ids, more than max_seq_length=3"):
    masking.mask_instance(tokens, config=MaskingConfig(), special_ids=is_special, max_seq_length=3, **kw)
  with pytest.raises(ValueError, match=r"special_ids covers the whole vocabulary"):
    masking.mask_instance(tokens, config=MaskingConfig(), special_ids=np.ones(v, bool), **kw)
  with pytest.raises(ValueError, match=r"mask_id=30522 is outside the vocabulary of 30522 ids"):
    masking.mask_instance(
      tokens, config=MaskingConfig(), special_ids=is_special, vocab_size=v, mask_id=v, rng=rng
    )
  with pytest.raises(TypeError, match=r"config is dict; expected a MaskingConfig"):
    masking.mask_instance(tokens, config={"rate": 0.15}, special_ids=is_special, **kw)
  # A set of ids works as well as the boolean array.
  out = masking.mask_instance(tokens, config=MaskingConfig(), special_ids={PAD, CLS, SEP, MASK}, **kw)
  assert out["masked_positions"][0] in (1, 2)
  for args, message in [
    ((-1, 0), r"masking_rng seed=-1 is too small; expected an integer >= 0"),
    ((0, 1.5), r"masking_rng index=1.5 is a float"),
    ((0, 1, -2), r"masking_rng epoch=-2 is too small"),
  ]:
    with pytest.raises((ValueError, TypeError), match=message):
      masking.masking_rng(*args)


def test_batch_features_errors(tokenizer, lookups, instances):
  rows = [
    {**x, **run(tokenizer, lookups, x["tokens"], MaskingConfig(), masking.masking_rng(0, i))}
    for i, x in enumerate(instances[:3])
  ]
  with pytest.raises(ValueError, match=r"batch_features got no instances; expected at least one"):
    masking.batch_features([], MAX_LEN)
  with pytest.raises(ValueError, match=r"instance 0 has \d+ tokens, more than max_seq_length=8"):
    masking.batch_features(rows, 8)
  no_label = {k: v for k, v in rows[1].items() if k != "pair_label"}
  with pytest.raises(
    ValueError, match=r"instance 1 has no 'pair_label' but instance 0 has; expected every instance"
  ):
    masking.batch_features([rows[0], no_label], MAX_LEN)
  with pytest.raises(
    ValueError, match=r"instance 0 lacks \['masked_positions', 'masked_ids', 'masked_weights'\]"
  ):
    masking.batch_features([{k: rows[0][k] for k in ("tokens", "token_type_ids", "input_ids")}], MAX_LEN)
  other = {
    **rows[1],
    **run(tokenizer, lookups, rows[1]["tokens"], MaskingConfig(max_predictions=5), masking.masking_rng(0, 1)),
  }
  with pytest.raises(ValueError, match=r"instance 1: masked_positions has 5 slots, instance 0 has 20"):
    masking.batch_features([rows[0], other], MAX_LEN)
