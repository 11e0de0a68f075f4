"""Pretraining instances on real text: BERT's pairs (NSP, SOP, single segments) and packing."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from bert_jax.data import instances as inst
from bert_jax.tokenization import Tokenizer
from tests import helpers

DATA = os.path.join(os.path.dirname(__file__), "data")
PAD, CLS, SEP, MASK = 0, 101, 102, 103  # the MiniLM (uncased BERT) vocab's ids, checked in the fixture
SPECIALS = (PAD, CLS, SEP, MASK)


@pytest.fixture(scope="module")
def tokenizer(minilm_dir) -> Tokenizer:
  tok = Tokenizer.from_vocab(os.path.join(minilm_dir, "vocab.txt"))
  assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == SPECIALS
  return tok


@pytest.fixture(scope="module")
def docs(tokenizer):
  """Lines of the sample texts as sentences; a blank line or every 5 lines ends a document."""
  return helpers.sample_documents(tokenizer, SPECIALS)


def flat(doc) -> np.ndarray:
  return np.concatenate([np.asarray(s) for s in doc])


def occurrences(haystack: np.ndarray, needle: np.ndarray) -> list[int]:
  """Start offsets where `needle` occurs contiguously in `haystack`."""
  n = len(needle)
  if n == 0 or n > len(haystack):
    return []
  windows = np.lib.stride_tricks.sliding_window_view(haystack, n)
  return list(np.flatnonzero((windows == needle).all(axis=1)))


def split_pair(tokens: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """Checks [CLS] A [SEP] (B [SEP]) with its token types; returns A and B."""
  assert tokens[0] == CLS and tokens[-1] == SEP
  seps = np.flatnonzero(tokens == SEP)
  if types[-1] == 0:  # single segment
    assert (types == 0).all() and list(seps) == [len(tokens) - 1]
    return tokens[1:-1], None
  assert len(seps) == 2, "a pair has exactly two [SEP]s (the text has none of its own)"
  first = seps[0]
  np.testing.assert_array_equal(types, np.r_[np.zeros(first + 1), np.ones(len(tokens) - first - 1)])
  assert CLS not in tokens[1:]
  return tokens[1:first], tokens[first + 1 : -1]


def test_real_corpus_shape(docs):
  lengths = [len(flat(d)) for d in docs]
  assert len(docs) == 11 and sum(lengths) == 1455, lengths  # pins the fixture the numbers below rely on


@pytest.mark.parametrize("pair_task", ["nsp", "sop", "none"])
@pytest.mark.parametrize("max_seq_length", [5, 16, 64, 128])
def test_structure_and_lengths(docs, pair_task, max_seq_length):
  out = inst.create_all_instances(
    docs, dupe_factor=2, seed=1, max_seq_length=max_seq_length, pair_task=pair_task, cls_id=CLS, sep_id=SEP
  )
  assert out
  for x in out:
    assert x["tokens"].dtype == np.int32 and x["token_type_ids"].dtype == np.int32
    assert len(x["tokens"]) <= max_seq_length and len(x["token_type_ids"]) == len(x["tokens"])
    a, b = split_pair(x["tokens"], x["token_type_ids"])
    assert len(a) >= 1  # truncation never empties a segment, even at the smallest max_seq_length
    if pair_task == "none":
      assert b is None and "pair_label" not in x
    else:
      assert b is not None and len(b) >= 1 and x["pair_label"] in (0, 1)


def test_truncation_matches_the_reference_loop():
  """The closed form equals BERT's drop-one-from-the-longer loop (B on a tie) for all small cases."""
  for budget in range(2, 13):
    for la in range(1, 15):
      for lb in range(1, 15):
        a, b = la, lb
        while a + b > budget:
          if a > b:
            a -= 1
          else:
            b -= 1
        assert inst._trimmed_lengths(la, lb, budget) == (a, b)


def test_truncation_drops_from_both_ends(docs):
  """A trimmed segment is a window of its text; each dropped token comes off the front or the back by a coin.

  One 190-token sentence into a 22-token budget drops 168 tokens: the window's offset is
  Binomial(168, 1/2).
  """
  sentence = flat(docs[2])
  drop, n = len(sentence) - 22, 300
  offsets = []
  for seed in range(n):
    (x,) = inst.create_instances(
      [[sentence]],
      0,
      max_seq_length=24,
      pair_task="none",
      cls_id=CLS,
      sep_id=SEP,
      rng=np.random.default_rng(seed),
    )
    a, _ = split_pair(x["tokens"], x["token_type_ids"])
    (start,) = occurrences(sentence, a)
    offsets.append(start)
  assert abs(np.mean(offsets) - drop / 2) < 5 * np.sqrt(drop / 4 / n), np.mean(offsets)
  assert abs(np.var(offsets) - drop / 4) < 0.35 * drop / 4, np.var(offsets)


def test_nsp_random_next_rate_and_put_back(docs):
  """First pair of a 2-sentence document: B is random with probability 0.5; the unused sentence returns.

  With both sentences in one chunk, A is sentence 1. If B is random, sentence 2 goes back and forms
  the next chunk alone, which can only take a random B (label 1) as in BERT.
  """
  two = [d for d in docs if len(d) >= 2]
  n, random_next = 2000, 0
  for k in range(n):
    d = k % len(two)
    corpus = [two[d][:2]] + [doc for j, doc in enumerate(two) if j != d]
    out = inst.create_instances(
      corpus, 0, max_seq_length=512, short_seq_prob=0.0, cls_id=CLS, sep_id=SEP, rng=np.random.default_rng(k)
    )
    a, b = split_pair(out[0]["tokens"], out[0]["token_type_ids"])
    np.testing.assert_array_equal(a, two[d][0])
    if out[0]["pair_label"] == 0:
      assert len(out) == 1
      np.testing.assert_array_equal(b, two[d][1])
    else:
      random_next += 1
      assert len(out) == 2 and out[1]["pair_label"] == 1
      np.testing.assert_array_equal(split_pair(out[1]["tokens"], out[1]["token_type_ids"])[0], two[d][1])
  rate = random_next / n
  assert abs(rate - 0.5) < 5 * np.sqrt(0.25 / n), rate


def test_nsp_segments_come_from_the_right_documents(docs):
  """True next: B follows A in the same document. Random next: B is text of another document."""
  counts = {0: 0, 1: 0}
  for d in range(len(docs)):
    for seed in range(30):
      rng = np.random.default_rng([d, seed])
      for x in inst.create_instances(docs, d, max_seq_length=48, cls_id=CLS, sep_id=SEP, rng=rng):
        a, b = split_pair(x["tokens"], x["token_type_ids"])
        counts[x["pair_label"]] += 1
        here = flat(docs[d])
        a_at = occurrences(here, a)
        assert a_at, "A is contiguous text of its own document"
        if x["pair_label"] == 0:
          b_at = occurrences(here, b)
          assert any(pb >= pa + len(a) for pa in a_at for pb in b_at), "B comes after A"
        else:
          assert any(occurrences(flat(docs[j]), b) for j in range(len(docs)) if j != d)
  assert counts[0] > 200 and counts[1] > 200, counts


def test_nsp_true_next_is_whole_sentences_when_nothing_is_cut(docs):
  """Untruncated, a true-next pair is sentences i..k-1 and k..m of one document, back to back."""
  seen = 0
  for d, doc in enumerate(docs):
    bounds = np.cumsum([0] + [len(s) for s in doc])
    for seed in range(20):
      rng = np.random.default_rng([d, seed, 7])
      for x in inst.create_instances(
        docs, d, max_seq_length=512, short_seq_prob=0.0, cls_id=CLS, sep_id=SEP, rng=rng
      ):
        if x["pair_label"] != 0:
          continue
        seen += 1
        a, b = split_pair(x["tokens"], x["token_type_ids"])
        text = flat(doc)
        starts = [s for s in occurrences(text, np.r_[a, b]) if s in bounds]
        assert any(s + len(a) in bounds and s + len(a) + len(b) in bounds for s in starts)
  assert seen > 50


def test_sop_swaps_half_and_keeps_the_true_continuation(docs):
  """SOP: in text order the pair is A then B (label 0) or B then A (label 1); both from one document."""
  labels = []
  for d, doc in enumerate(docs):
    for seed in range(60):
      rng = np.random.default_rng([d, seed, 3])
      for x in inst.create_instances(
        docs, d, max_seq_length=40, pair_task="sop", cls_id=CLS, sep_id=SEP, rng=rng
      ):
        a, b = split_pair(x["tokens"], x["token_type_ids"])
        first, second = (b, a) if x["pair_label"] else (a, b)
        text = flat(doc)
        f_at, s_at = occurrences(text, first), occurrences(text, second)
        assert any(ps >= pf + len(first) for pf in f_at for ps in s_at), "the pair is one stretch of text"
        labels.append(x["pair_label"])
  rate, n = np.mean(labels), len(labels)
  assert n > 1000 and abs(rate - 0.5) < 5 * np.sqrt(0.25 / n), (rate, n)


def test_sop_untruncated_instances_rebuild_the_document(docs):
  """SOP puts nothing back and, with room for everything, cuts nothing: in order the pairs are the text."""
  for d, doc in enumerate(docs):
    rng = np.random.default_rng(d)
    out = inst.create_instances(
      docs, d, max_seq_length=512, short_seq_prob=0.0, pair_task="sop", cls_id=CLS, sep_id=SEP, rng=rng
    )
    pieces = []
    for x in out:
      a, b = split_pair(x["tokens"], x["token_type_ids"])
      pieces += [b, a] if x["pair_label"] else [a, b]
    np.testing.assert_array_equal(np.concatenate(pieces), flat(doc))


def test_short_seq_prob_rate_and_range(tokenizer):
  """A document of one-token sentences fills each chunk to exactly the target: lengths show the targets.

  The target is drawn once per document (as BERT does): short with probability short_seq_prob,
  then uniform on [2, max_seq_length - 2] for a single segment.
  """
  with open(os.path.join(DATA, "sample_text.txt"), encoding="utf-8") as f:
    words = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(f.read()))
  doc = [[t] for t in words[:100]]
  other = [[t] for t in words[100:120]]
  n, p, max_len = 1500, 0.3, 32
  short, targets = 0, []
  for k in range(n):
    out = inst.create_instances(
      [doc, other],
      0,
      max_seq_length=max_len,
      short_seq_prob=p,
      pair_task="none",
      cls_id=CLS,
      sep_id=SEP,
      rng=np.random.default_rng(k),
    )
    lengths = {len(x["tokens"]) for x in out[:-1]}  # the last chunk is what is left of the document
    assert len(lengths) == 1
    target = lengths.pop() - 2
    targets.append(target)
    short += target < max_len - 2
  expected = p * (max_len - 4) / (max_len - 3)  # a short draw can also land on the full length
  assert abs(short / n - expected) < 5 * np.sqrt(expected * (1 - expected) / n), short / n
  assert min(targets) == 2 and max(targets) == max_len - 2
  with pytest.raises(ValueError, match=r"short_seq_prob=1\.5; expected a probability in \[0, 1\]"):
    inst.create_instances(
      [doc],
      0,
      max_seq_length=16,
      short_seq_prob=1.5,
      pair_task="none",
      cls_id=CLS,
      sep_id=SEP,
      rng=np.random.default_rng(),
    )


def test_dupe_factor_and_seeds(docs):
  kwargs = {"max_seq_length": 64, "short_seq_prob": 0.0, "pair_task": "none", "cls_id": CLS, "sep_id": SEP}
  once = inst.create_all_instances(docs, dupe_factor=1, seed=5, **kwargs)
  thrice = inst.create_all_instances(docs, dupe_factor=3, seed=5, **kwargs)
  assert len(thrice) == 3 * len(once)  # single segments, no short targets: chunking is fixed

  def same(xs, ys):
    return len(xs) == len(ys) and all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(xs, ys))

  nsp = {"max_seq_length": 64, "cls_id": CLS, "sep_id": SEP}
  first = inst.create_all_instances(docs, dupe_factor=3, seed=11, **nsp)
  assert same(first, inst.create_all_instances(docs, dupe_factor=3, seed=11, **nsp))
  assert not same(first, inst.create_all_instances(docs, dupe_factor=3, seed=12, **nsp))
  # The passes differ from each other (fresh draws), so duplication is not repetition.
  one_pass = inst.create_all_instances(docs, dupe_factor=1, seed=11, **nsp)
  assert not same(one_pass, first[len(one_pass) : 2 * len(one_pass)])
  shuffled = inst.create_all_instances(docs, dupe_factor=3, seed=11, shuffle=True, **nsp)
  assert not same(first, shuffled)
  assert sorted(x["tokens"].tobytes() for x in shuffled) == sorted(x["tokens"].tobytes() for x in first)


@pytest.mark.parametrize("max_seq_length", [3, 16, 64, 200])
def test_packing(docs, max_seq_length):
  packed = inst.pack_documents(docs, max_seq_length=max_seq_length, cls_id=CLS, sep_id=SEP)
  budget = max_seq_length - 2
  text, pieces = [], []
  for x in packed:
    tokens, seg, pos = x["tokens"], x["segment_ids"], x["position_ids"]
    assert len(tokens) <= max_seq_length
    assert (x["token_type_ids"] == 0).all()
    assert seg[0] == 1 and (np.diff(seg) >= 0).all() and (np.diff(seg) <= 1).all()
    for s in range(1, seg.max() + 1):
      where = np.flatnonzero(seg == s)
      piece = tokens[where]
      assert piece[0] == CLS and piece[-1] == SEP and 1 <= len(piece) - 2 <= budget
      np.testing.assert_array_equal(pos[where], np.arange(len(where)))
      text.append(piece[1:-1])
      pieces.append(len(piece))
  # Every token once, in order.
  np.testing.assert_array_equal(np.concatenate(text), np.concatenate([flat(d) for d in docs]))
  # Greedy: each sequence was closed because the next segment would not fit.
  for x, nxt in itertools.pairwise(packed):
    assert len(x["tokens"]) + (nxt["segment_ids"] == 1).sum() > max_seq_length
  # Long documents are cut into full pieces and a remainder.
  lengths = [len(flat(d)) for d in docs]
  expected_pieces = sum(-(-n // budget) for n in lengths)
  assert len(pieces) == expected_pieces
  if max_seq_length == 64:
    assert max(lengths) > budget and max(pieces) == max_seq_length


def test_packing_features_keep_documents_apart(docs):
  packed = inst.pack_documents(docs, max_seq_length=256, cls_id=CLS, sep_id=SEP)
  assert max(x["segment_ids"].max() for x in packed) >= 3  # short documents do share sequences
  assert max(x["position_ids"].max() for x in packed) < 256


def test_errors(docs):
  rng = np.random.default_rng(0)
  common = {"cls_id": CLS, "sep_id": SEP}
  with pytest.raises(ValueError, match=r"documents is empty; expected at least one document"):
    inst.create_instances([], 0, max_seq_length=32, rng=rng, **common)
  with pytest.raises(ValueError, match=r"all 3 documents are empty \(no tokens\)"):
    inst.create_all_instances([[], [[]], [[], []]], dupe_factor=1, seed=0, max_seq_length=32, **common)
  with pytest.raises(ValueError, match=r"all 2 documents are empty"):
    inst.pack_documents([[], [[]]], max_seq_length=32, **common)
  with pytest.raises(
    ValueError,
    match=r"max_seq_length=4 is too small; expected an integer >= 5 \(pair_task='nsp': \[CLS\] A \[SEP\] B \[SEP\]\)",
  ):
    inst.create_instances(docs, 0, max_seq_length=4, rng=rng, **common)
  with pytest.raises(
    ValueError, match=r"max_seq_length=2 is too small; expected an integer >= 3 \(pair_task='none'"
  ):
    inst.create_instances(docs, 0, max_seq_length=2, pair_task="none", rng=rng, **common)
  with pytest.raises(ValueError, match=r"max_seq_length=2 is too small; expected an integer >= 3 \(packing"):
    inst.pack_documents(docs, max_seq_length=2, **common)
  with pytest.raises(TypeError, match=r"max_seq_length=64.0 is a float; expected an integer >= 5"):
    inst.create_instances(docs, 0, max_seq_length=64.0, rng=rng, **common)
  with pytest.raises(ValueError, match=r"pair_task='mlm'; expected one of \['nsp', 'sop', 'none'\]"):
    inst.create_instances(docs, 0, max_seq_length=32, pair_task="mlm", rng=rng, **common)
  with pytest.raises(ValueError, match=r"doc_index=11 is outside the 11 documents; expected \[0, 11\)"):
    inst.create_instances(docs, 11, max_seq_length=32, rng=rng, **common)
  with pytest.raises(
    ValueError, match=r"pair_task='nsp' draws random next segments from other documents, but"
  ):
    inst.create_instances([docs[0], [], [[]]], 0, max_seq_length=32, rng=rng, **common)
  with pytest.raises(ValueError, match=r"dupe_factor=0 is too small; expected an integer >= 1 \(passes"):
    inst.create_all_instances(docs, dupe_factor=0, seed=0, max_seq_length=32, **common)
  with pytest.raises(ValueError, match=r"seed=-1 is too small; expected an integer >= 0"):
    inst.create_all_instances(docs, dupe_factor=1, seed=-1, max_seq_length=32, **common)
  with pytest.raises(
    ValueError, match=r"document 1 sentence 0 has shape \(2, 2\) and dtype int64; expected a 1-D"
  ):
    inst.create_instances([docs[0], [np.zeros((2, 2), np.int64)]], 0, max_seq_length=32, rng=rng, **common)
  with pytest.raises(ValueError, match=r"document 0 sentence 1 holds token id -3; expected ids >= 0"):
    inst.pack_documents([[[5], [-3]]], max_seq_length=32, **common)
  with pytest.raises(
    ValueError, match=r"document 1 sentence 0 holds token id 102 \(\[CLS\] is 101, \[SEP\] 102\)"
  ):
    inst.create_instances([docs[0], [[5, SEP]]], 0, max_seq_length=32, rng=rng, **common)
  with pytest.raises(TypeError, match=r"document 0 is a str; expected a list of sentences"):
    inst.pack_documents(["some text"], max_seq_length=32, **common)


def test_one_document_corpus_is_fine_without_nsp(docs):
  """A lone document (or one shorter than a sequence) gives instances for SOP, single segments, packing."""
  short = [docs[7][:2]]
  for task in ("sop", "none"):
    out = inst.create_instances(
      short, 0, max_seq_length=128, pair_task=task, cls_id=CLS, sep_id=SEP, rng=np.random.default_rng(0)
    )
    assert len(out) == 1
  assert len(inst.pack_documents(short, max_seq_length=128, cls_id=CLS, sep_id=SEP)) == 1
  # An empty document among others yields nothing, with no error.
  assert (
    inst.create_instances(
      docs + [[]], len(docs), max_seq_length=64, cls_id=CLS, sep_id=SEP, rng=np.random.default_rng(0)
    )
    == []
  )


def test_random_next_document_is_uniform_over_the_others():
  nonempty = np.array([0, 2, 3, 5])  # documents 1 and 4 are empty
  rng = np.random.default_rng(0)
  n = 6000
  picks = np.array([inst._other_document(nonempty, 3, rng) for _ in range(n)])
  counts = {d: int((picks == d).sum()) for d in (0, 1, 2, 3, 4, 5)}
  assert counts[1] == counts[3] == counts[4] == 0, counts
  for d in (0, 2, 5):
    assert abs(counts[d] - n / 3) < 5 * np.sqrt(n * 2 / 9), counts
