"""Pretraining instances from documents: BERT's sentence pairs and RoBERTa-style packing.

A corpus is a list of documents; a document is a list of sentences; a sentence is a sequence of
token ids without special tokens. Empty sentences and documents are dropped, as BERT's data script
drops blank lines.

`create_instances` follows BERT's create_pretraining_data.py: sentences are gathered into a chunk
until it reaches a target length (max_seq_length - 3, or with probability short_seq_prob a random
shorter one, drawn once per document as the reference does), the chunk is cut after a random
number of sentences into segments A and B, and the pair is trimmed to the budget. The pair task
decides what B is:

- "nsp" (BERT): half the time, and always when the chunk is a single sentence, B is a random span
  of another document (pair_label 1) and the sentences of the chunk after A go back to be used
  again; otherwise B is the rest of the chunk (pair_label 0).
- "sop" (ALBERT): B is always the rest of the chunk and half the time A and B trade places
  (pair_label 1). A one-sentence chunk is cut inside the sentence at a random token, so that B
  still continues A; ALBERT would take a random document there and so mix an NSP example into the
  SOP labels.
- "none": one segment, `[CLS] A [SEP]`, with a budget of max_seq_length - 2 and no pair_label.

`pack_documents` is RoBERTa's FULL-SENTENCES input with packing: whole documents, each its own
`[CLS] ... [SEP]` segment, laid end to end in sequences of at most max_seq_length, with
segment ids and restarting position ids so attention and positions stay within a document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PAIR_TASKS = ("nsp", "sop", "none")
# First word of instance-creation seed sequences (see masking._STATIC_TAG for why tags exist).
_INSTANCES_TAG = 0x696E7374  # "inst"
_SHUFFLE_TAG = 0x73687566  # "shuf"


def _as_corpus(
  documents: Sequence[Sequence[Sequence[int]]], cls_id: int, sep_id: int
) -> list[list[np.ndarray]]:
  """Checks the documents and returns them as lists of non-empty int32 arrays (same indices)."""
  if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
    raise TypeError(
      f"documents is {type(documents).__name__}; expected a list of documents (lists of sentences)"
    )
  if len(documents) == 0:
    raise ValueError("documents is empty; expected at least one document (a list of sentences of token ids)")
  corpus = []
  for d, doc in enumerate(documents):
    if isinstance(doc, (str, bytes)):
      raise TypeError(f"document {d} is a {type(doc).__name__}; expected a list of sentences of token ids")
    sentences = []
    for s, sentence in enumerate(doc):
      ids = np.asarray(sentence)
      if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(
          f"document {d} sentence {s} has shape {ids.shape} and dtype {ids.dtype}; "
          "expected a 1-D sequence of integer token ids"
        )
      if ids.size and ids.min() < 0:
        raise ValueError(f"document {d} sentence {s} holds token id {int(ids.min())}; expected ids >= 0")
      # A [CLS] or [SEP] inside the text would break the layout every consumer relies on (one [CLS]
      # first, [SEP]s only between segments); text that spells them needs cleaning upstream.
      stray = ids[(ids == cls_id) | (ids == sep_id)]
      if stray.size:
        raise ValueError(
          f"document {d} sentence {s} holds token id {int(stray[0])} ([CLS] is {cls_id}, [SEP] {sep_id}); "
          "expected text only: the special tokens are added here"
        )
      if ids.size:
        sentences.append(ids.astype(np.int32))
    corpus.append(sentences)
  if not any(corpus):
    raise ValueError(
      f"all {len(corpus)} documents are empty (no tokens); expected at least one document with tokens"
    )
  return corpus


def _check_int(name: str, value: Any, minimum: int, why: str = "") -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}={value!r} is a {type(value).__name__}; expected an integer >= {minimum}{why}")
  if value < minimum:
    raise ValueError(f"{name}={value} is too small; expected an integer >= {minimum}{why}")


def _check_common(max_seq_length: int, short_seq_prob: float, pair_task: str) -> None:
  if pair_task not in PAIR_TASKS:
    raise ValueError(f"pair_task={pair_task!r}; expected one of {list(PAIR_TASKS)}")
  smallest = 3 if pair_task == "none" else 5
  layout = "[CLS] A [SEP]" if pair_task == "none" else "[CLS] A [SEP] B [SEP]"
  _check_int("max_seq_length", max_seq_length, smallest, f" (pair_task={pair_task!r}: {layout})")
  if not 0.0 <= short_seq_prob <= 1.0:
    raise ValueError(f"short_seq_prob={short_seq_prob!r}; expected a probability in [0, 1]")


def _check_nsp_corpus(corpus: list[list[np.ndarray]], pair_task: str) -> None:
  if pair_task == "nsp" and sum(1 for doc in corpus if doc) < 2:
    raise ValueError(
      "pair_task='nsp' draws random next segments from other documents, but the corpus has only 1 "
      "non-empty document; expected at least 2 (or use pair_task='sop' or 'none')"
    )


def _trimmed_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
  """Lengths after BERT's truncate_seq_pair: drop from the longer segment (from B on a tie).

  In closed form: a segment within half the budget keeps everything and the other gets the rest;
  otherwise A keeps ceil(budget / 2) and B floor(budget / 2).
  """
  if len_a + len_b <= budget:
    return len_a, len_b
  if 2 * len_b <= budget:
    return budget - len_b, len_b
  if 2 * len_a <= budget:
    return len_a, budget - len_a
  return (budget + 1) // 2, budget // 2


def _trim(tokens: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
  """Keeps `keep` tokens, each dropped one taken from the front or the back by a fair coin."""
  drop = len(tokens) - keep
  if drop == 0:
    return tokens
  front = int(rng.binomial(drop, 0.5))
  return tokens[front : front + keep]


def _assemble(a: np.ndarray, b: np.ndarray | None, cls_id: int, sep_id: int) -> dict[str, Any]:
  parts = [np.array([cls_id], np.int32), a, np.array([sep_id], np.int32)]
  types = [np.zeros(len(a) + 2, np.int32)]
  if b is not None:
    parts += [b, np.array([sep_id], np.int32)]
    types.append(np.ones(len(b) + 1, np.int32))
  return {"tokens": np.concatenate(parts), "token_type_ids": np.concatenate(types)}


def _document_instances(
  corpus: list[list[np.ndarray]],
  nonempty: np.ndarray,
  doc_index: int,
  max_seq_length: int,
  short_seq_prob: float,
  pair_task: str,
  cls_id: int,
  sep_id: int,
  rng: np.random.Generator,
) -> list[dict[str, Any]]:
  document = corpus[doc_index]
  pairs = pair_task != "none"
  max_tokens = max_seq_length - (3 if pairs else 2)
  # Mostly fill the sequence (padding is wasted compute); sometimes go shorter, so the model also
  # sees the short inputs of fine-tuning. Drawn once per document, as the reference does.
  target = max_tokens
  if rng.random() < short_seq_prob:
    target = int(rng.integers(min(2, max_tokens), max_tokens + 1))

  instances: list[dict[str, Any]] = []
  chunk: list[np.ndarray] = []
  chunk_len = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    chunk_len += len(document[i])
    if i == len(document) - 1 or chunk_len >= target:
      if not pairs:
        a = _trim(np.concatenate(chunk), min(chunk_len, max_tokens), rng)
        instances.append(_assemble(a, None, cls_id, sep_id))
      else:
        instance = _pair_instance(
          chunk, corpus, nonempty, doc_index, target, max_tokens, pair_task, cls_id, sep_id, rng
        )
        if instance is not None:
          instance, unused = instance
          # NSP's random B left the chunk's later sentences unused: read them again.
          i -= unused
          instances.append(instance)
      chunk, chunk_len = [], 0
    i += 1
  return instances


def _nonempty(corpus: list[list[np.ndarray]]) -> np.ndarray:
  return np.array([d for d, doc in enumerate(corpus) if doc], dtype=np.int64)


def _other_document(nonempty: np.ndarray, doc_index: int, rng: np.random.Generator) -> int:
  """A non-empty document other than `doc_index`, uniformly, in O(log n) (no list of the others)."""
  k = int(rng.integers(len(nonempty) - 1))
  # Indices from the position of doc_index on shift up by one, skipping it.
  return int(nonempty[k + (k >= np.searchsorted(nonempty, doc_index))])


def _pair_instance(chunk, corpus, nonempty, doc_index, target, max_tokens, pair_task, cls_id, sep_id, rng):
  """One pair from a chunk: (instance, number of chunk sentences to put back), or None."""
  split = 1 if len(chunk) == 1 else int(rng.integers(1, len(chunk)))
  a = np.concatenate(chunk[:split])
  unused = 0
  if pair_task == "nsp":
    if len(chunk) == 1 or rng.random() < 0.5:
      label = 1
      want = target - len(a)
      other = corpus[_other_document(nonempty, doc_index, rng)]
      start = int(rng.integers(len(other)))
      pieces, got = [], 0
      for sentence in other[start:]:
        pieces.append(sentence)
        got += len(sentence)
        if got >= want:
          break
      b = np.concatenate(pieces)
      unused = len(chunk) - split
    else:
      label = 0
      b = np.concatenate(chunk[split:])
  else:  # sop
    if len(chunk) == 1:
      sentence = chunk[0]
      if len(sentence) < 2:
        return None  # a lone one-token sentence has no order to predict
      cut = int(rng.integers(1, len(sentence)))
      a, b = sentence[:cut], sentence[cut:]
    else:
      b = np.concatenate(chunk[split:])
    label = int(rng.random() < 0.5)
    if label:
      a, b = b, a
  keep_a, keep_b = _trimmed_lengths(len(a), len(b), max_tokens)
  a, b = _trim(a, keep_a, rng), _trim(b, keep_b, rng)
  instance = _assemble(a, b, cls_id, sep_id)
  instance["pair_label"] = label
  return instance, unused


def create_instances(
  documents: Sequence[Sequence[Sequence[int]]],
  doc_index: int,
  *,
  max_seq_length: int,
  short_seq_prob: float = 0.1,
  pair_task: str = "nsp",
  cls_id: int,
  sep_id: int,
  rng: np.random.Generator,
) -> list[dict[str, Any]]:
  """BERT's instances from document `doc_index` (other documents supply NSP's random segments).

  Each instance: `tokens` (int32, `[CLS] A [SEP] B [SEP]` or `[CLS] A [SEP]`, unpadded),
  `token_type_ids` (0 up to the first [SEP], 1 after) and, for "nsp"/"sop", `pair_label` (NSP: 1
  when B is a random segment, 0 when it is the true continuation; SOP: 1 when A and B are swapped).
  An empty document yields no instances.
  """
  _check_common(max_seq_length, short_seq_prob, pair_task)
  corpus = _as_corpus(documents, cls_id, sep_id)
  _check_int("doc_index", doc_index, 0)
  if not 0 <= doc_index < len(corpus):
    raise ValueError(
      f"doc_index={doc_index} is outside the {len(corpus)} documents; expected [0, {len(corpus)})"
    )
  _check_nsp_corpus(corpus, pair_task)
  return _document_instances(
    corpus, _nonempty(corpus), int(doc_index), max_seq_length, short_seq_prob, pair_task, cls_id, sep_id, rng
  )


def create_all_instances(
  documents: Sequence[Sequence[Sequence[int]]],
  *,
  dupe_factor: int,
  seed: int,
  max_seq_length: int,
  short_seq_prob: float = 0.1,
  pair_task: str = "nsp",
  cls_id: int,
  sep_id: int,
  shuffle: bool = False,
) -> list[dict[str, Any]]:
  """`dupe_factor` passes over every document (BERT's static data), pass by pass, document by document.

  Each (pass, document) has its own generator from (seed, pass, document), so a document's
  instances do not depend on the order or number of the others. shuffle=True shuffles the result
  with a generator of its own, as BERT does before writing its files.
  """
  _check_common(max_seq_length, short_seq_prob, pair_task)
  _check_int("dupe_factor", dupe_factor, 1, " (passes over the corpus)")
  _check_int("seed", seed, 0)
  corpus = _as_corpus(documents, cls_id, sep_id)
  _check_nsp_corpus(corpus, pair_task)
  instances = []
  nonempty = _nonempty(corpus)
  for dupe in range(dupe_factor):
    for d in range(len(corpus)):
      rng = np.random.default_rng(np.random.SeedSequence([_INSTANCES_TAG, int(seed), dupe, d]))
      instances += _document_instances(
        corpus, nonempty, d, max_seq_length, short_seq_prob, pair_task, cls_id, sep_id, rng
      )
  if shuffle:
    order = np.random.default_rng(np.random.SeedSequence([_SHUFFLE_TAG, int(seed)])).permutation(
      len(instances)
    )
    instances = [instances[k] for k in order]
  return instances


def pack_documents(
  documents: Sequence[Sequence[Sequence[int]]], *, max_seq_length: int, cls_id: int, sep_id: int
) -> list[dict[str, Any]]:
  """Whole documents packed greedily, in order, into sequences of at most max_seq_length tokens.

  Each document becomes `[CLS] doc [SEP]`; one longer than max_seq_length - 2 tokens is cut into
  pieces of that many tokens (the last shorter), each its own segment. A segment goes into the
  current sequence if it fits, else it starts the next one. Each instance: `tokens`,
  `token_type_ids` (all 0), `segment_ids` (1, 2, ... per segment; 0 is left for padding) and
  `position_ids` (from 0 in each segment).
  """
  _check_int("max_seq_length", max_seq_length, 3, " (packing: [CLS] doc [SEP])")
  corpus = _as_corpus(documents, cls_id, sep_id)
  piece_len = max_seq_length - 2
  pieces = []
  for doc in corpus:
    if doc:
      flat = np.concatenate(doc)
      pieces += [flat[k : k + piece_len] for k in range(0, len(flat), piece_len)]

  instances: list[dict[str, Any]] = []
  current: list[np.ndarray] = []
  used = 0

  def flush():
    tokens = np.concatenate([np.concatenate([[cls_id], p, [sep_id]]) for p in current]).astype(np.int32)
    segments = np.concatenate([np.full(len(p) + 2, k + 1) for k, p in enumerate(current)]).astype(np.int32)
    positions = np.concatenate([np.arange(len(p) + 2) for p in current]).astype(np.int32)
    instances.append(
      {
        "tokens": tokens,
        "token_type_ids": np.zeros(len(tokens), np.int32),
        "segment_ids": segments,
        "position_ids": positions,
      }
    )

  for piece in pieces:
    if current and used + len(piece) + 2 > max_seq_length:
      flush()
      current, used = [], 0
    current.append(piece)
    used += len(piece) + 2
  if current:
    flush()
  return instances
