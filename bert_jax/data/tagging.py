"""Token tagging (CoNLL NER, POS): sentences from CoNLL column files or rows, tag schemes, features
and predictions back to one tag per word.

Words come pre-split and each goes through WordPiece on its own; a word's tag sits on its first
sub-token and the loss skips the rest (the BERT paper's NER setup). With document context (the paper's
CoNLL-2003 setup, section 5.3: "we include the maximal document context provided by the data") each sentence
is encoded with as many words of its document around it as fit; only the sentence's own words carry labels
and predictions.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax.data.task_encoding import _check_length
from bert_jax.data.task_rows import Row, TaskDataError, _error, _read_text, _string_list, _value

SCHEMES = ("iob2", "iob1", "none")
IGNORE = -100  # the label of positions the loss skips (transformers' convention)
_CONLL_COLUMNS = re.compile(r"[ \t]+")  # only these: tokens may hold other Unicode spaces


@dataclasses.dataclass
class TaggedExample:
  """Pre-split words and one tag per word (None when unlabelled); line: where the sentence starts;
  document: the index of its document in the source (CoNLL's -DOCSTART- boundaries), None when the source
  marks none."""

  tokens: list[str]
  tags: list[str] | None
  line: int
  source: str = ""
  document: int | None = None


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
  """IOB1 to IOB2: an I-X that starts a chunk (after O, at the start, or after another type) becomes B-X.

  In IOB1 (the original CoNLL-2003 files) B-X appears only where a chunk directly follows another
  chunk of the same type; IOB2 (TFDS and Hugging Face conll2003) starts every chunk with B-X. Tags
  that are not I-X are kept as they are.
  """
  out, previous = [], "O"
  for tag in tags:
    if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
      tag = "B-" + tag[2:]
    out.append(tag)
    previous = tag
  return out


def _scheme_problem(tags: Sequence[str], scheme: str) -> tuple[int, str] | None:
  """(position, reason) of the first tag the scheme does not allow; None when all are fine."""
  if scheme == "none":
    return None
  for i, tag in enumerate(tags):
    if tag == "O":
      continue
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
      return i, (
        f"tag {tag!r} is not an IOB tag (O, B-TYPE or I-TYPE); for tags without chunks (POS) "
        "pass scheme='none'"
      )
    if scheme == "iob2" and prefix == "I" and (i == 0 or tags[i - 1] not in (f"B-{kind}", f"I-{kind}")):
      return i, (
        f"tag {tag!r} starts a chunk, which IOB2 does not allow (chunks start with B-{kind}); the "
        "data look like IOB1, as the original CoNLL-2003 files are: pass scheme='iob1' to convert, or "
        "scheme='none' to keep the tags as they are"
      )
  return None


def _check_scheme(scheme: str) -> None:
  if scheme not in SCHEMES:
    raise ValueError(f"scheme={scheme!r}; expected one of {SCHEMES}")


def _column(columns: list[str], index: int) -> int | None:
  position = index if index >= 0 else len(columns) + index
  return position if 0 <= position < len(columns) else None


def read_conll(
  path: str | os.PathLike,
  *,
  token_column: int = 0,
  tag_column: int | None = -1,
  scheme: str = "iob2",
) -> list[TaggedExample]:
  """Sentences of a CoNLL column file: whitespace-separated columns (spaces or tabs), one word per
  line, a blank line between sentences; "-DOCSTART-" lines start a document (each sentence's `document`;
  None throughout when the file has none).

  tag_column None reads words only (tags None). scheme: "iob2" checks that tags are IOB2 (an I-X
  that starts a chunk is an error, as it means IOB1 data); "iob1" converts IOB1 to IOB2 (the
  original CoNLL-2003 English files); "none" keeps any tags (POS).
  """
  _check_scheme(scheme)
  path = os.fspath(path)
  text = _read_text(path)
  examples: list[TaggedExample] = []
  words: list[str] = []
  tags: list[str] = []
  lines: list[int] = []
  document, in_document, marked = 0, 0, False  # in_document: sentences of the current document so far

  def flush() -> None:
    nonlocal in_document
    if not words:
      return
    sentence_tags = None
    if tag_column is not None:
      problem = _scheme_problem(tags, scheme)
      if problem:
        i, reason = problem
        raise _error(path, lines[i], None, f"column {tag_column}: {reason}")
      sentence_tags = iob1_to_iob2(tags) if scheme == "iob1" else list(tags)
    examples.append(TaggedExample(list(words), sentence_tags, lines[0], path, document))
    in_document += 1
    words.clear()
    tags.clear()
    lines.clear()

  for lineno, line in enumerate(text.split("\n"), 1):
    columns = [c for c in _CONLL_COLUMNS.split(line.strip(" \t\r")) if c]
    if not columns or columns[0] == "-DOCSTART-":
      flush()
      if columns:
        document, in_document, marked = document + (in_document > 0), 0, True
      continue
    word_at = _column(columns, token_column)
    tag_at = None if tag_column is None else _column(columns, tag_column)
    if word_at is None or (tag_column is not None and (tag_at is None or tag_at == word_at)):
      wanted = f"a word in column {token_column}" + (
        "" if tag_column is None else f" and a tag in column {tag_column}"
      )
      raise _error(path, lineno, None, f"{len(columns)} column(s) {columns}; expected {wanted}")
    words.append(columns[word_at])
    lines.append(lineno)
    if tag_at is not None:
      tags.append(columns[tag_at])
  flush()
  if not examples:
    raise TaskDataError(
      f"{path} holds no sentences; expected one word per line, blank lines between sentences"
    )
  if not marked:
    for example in examples:
      example.document = None
  return examples


def tagging_examples(
  rows: Iterable[Row],
  source: str,
  *,
  tokens_field: str = "tokens",
  tags_field: str | None = "tags",
  tag_names: Sequence[str] | None = None,
  scheme: str = "none",
) -> list[TaggedExample]:
  """Tagged sentences from rows like {"tokens": [...], "tags": [...]} (JSON lines, TFDS conll2003).

  Integer tags (TFDS ClassLabel values) are looked up in `tag_names` (tfds_label_names(name,
  data_dir, "ner_tags")). tags_field None: unlabelled. scheme as in read_conll, but "none" by
  default: JSON and TFDS data are usually IOB2 already.
  """
  _check_scheme(scheme)
  source = str(source)
  examples = []
  for line, row in rows:
    words = _string_list(_value(row, tokens_field, source, line), source, line, tokens_field, "words")
    if not words:
      raise _error(source, line, tokens_field, "an empty list; expected at least one word")
    for w in words:
      if not isinstance(w, str):
        raise _error(source, line, tokens_field, f"holds {type(w).__name__} {w!r}; expected words (strings)")
    tags = None
    if tags_field is not None:
      raw = _string_list(_value(row, tags_field, source, line), source, line, tags_field, "tags")
      if len(raw) != len(words):
        raise _error(
          source,
          line,
          tags_field,
          f"{len(raw)} tags for {len(words)} words in {tokens_field!r}; expected one tag per word",
        )
      tags = [_tag_name(t, tag_names, source, line, tags_field) for t in raw]
      problem = _scheme_problem(tags, scheme)
      if problem:
        raise _error(source, line, tags_field, f"position {problem[0]}: {problem[1]}")
      if scheme == "iob1":
        tags = iob1_to_iob2(tags)
    examples.append(TaggedExample(words, tags, line, source))
  if not examples:
    raise TaskDataError(f"{source}: no rows; expected at least one sentence")
  return examples


def _tag_name(tag: Any, tag_names: Sequence[str] | None, source: str, line: int, field: str) -> str:
  if isinstance(tag, str):
    return tag
  if isinstance(tag, (int, np.integer)) and not isinstance(tag, bool):
    if tag_names is None:
      raise _error(
        source,
        line,
        field,
        f"integer tag {tag!r} and no tag_names; pass tag_names= (tfds_label_names for TFDS)",
      )
    if not 0 <= tag < len(tag_names):
      raise _error(source, line, field, f"tag id {tag!r} is outside tag_names (0..{len(tag_names) - 1})")
    return str(tag_names[tag])
  raise _error(source, line, field, f"holds {type(tag).__name__} {tag!r}; expected tags (strings or ids)")


def tag_set(examples: Iterable[TaggedExample]) -> list[str]:
  """The tags in the examples, sorted, with "O" (if present) first so it gets id 0."""
  tags = {t for e in examples if e.tags is not None for t in e.tags}
  if not tags:
    raise TaskDataError("tag_set: the examples carry no tags; expected labelled (training) sentences")
  return sorted(tags, key=lambda t: (t != "O", t))


def _word_pieces(tokenizer, words: Iterable[str]) -> dict[str, list[int]]:
  """Each distinct word's wordpiece ids, from one batched call; [UNK] for a word with no pieces."""
  distinct = list(dict.fromkeys(words))
  encoded = tokenizer(distinct, truncation=False, padding=False)["input_ids"] if distinct else []
  unk = tokenizer.unk_id
  # A word the normalizer deletes entirely (control or format characters) still needs a position so
  # that it can carry its tag and get a prediction: it reads as [UNK], as an unknown word would.
  return {w: list(ids[1:-1]) or [unk] for w, ids in zip(distinct, encoded)}


def tagging_features(
  examples: Sequence[TaggedExample],
  tokenizer,
  max_seq_length: int,
  label_to_id: Mapping[str, int] | None,
  document_context: bool = False,
) -> dict[str, Any]:
  """Features for token tagging, "[CLS] pieces of word 0, word 1, ... [SEP]" padded to max_seq_length.

  input_ids, attention_mask, token_type_ids (all 0): (N, L) int32.
  labels (N, L) int32: a word's tag id on its first sub-token; IGNORE (-100) on its other
    sub-tokens, [CLS], [SEP], padding, and everywhere in unlabelled examples.
  word_index (N, L) int32: the index of the word whose first sub-token sits there, -1 elsewhere
    (decode_tags maps predictions back to words with it).
  truncated_words: an int, the words left out because the sequence was full; pop it before batching.
    Words are never split across the cut: a word goes in whole or not at all, and so do all after it.

  Each word goes through the tokenizer's normalization and WordPiece on its own (the words come
  pre-split). A word that yields no wordpiece (only control characters) becomes one [UNK], so every
  word of an untruncated sentence has a position.

  document_context: "[CLS] words before, the sentence, words after [SEP]", the context taken from the other
  sentences of the example's document (whole words, nearest first, half the room before the sentence and the
  rest after, the unused side's room going to the other) and carrying IGNORE labels and word_index -1. Every
  example needs a `document` (document_examples checks).
  """
  if not examples:
    raise ValueError("tagging_features: no examples")
  length = _check_length(max_seq_length, 2)
  pieces = _word_pieces(tokenizer, (w for e in examples for w in e.tokens))
  n = len(examples)
  input_ids = np.full((n, length), tokenizer.pad_id, dtype=np.int32)
  attention_mask = np.zeros((n, length), dtype=np.int32)
  labels = np.full((n, length), IGNORE, dtype=np.int32)
  word_index = np.full((n, length), -1, dtype=np.int32)
  cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
  contexts = _document_contexts(examples, pieces, length - 2) if document_context else None
  truncated_words = 0
  for row, example in enumerate(examples):
    if example.tags is not None:
      if label_to_id is None:
        raise ValueError("tagging_features: the examples have tags but label_to_id is None")
      unknown = [t for t in example.tags if t not in label_to_id]
      if unknown:
        raise _error(
          example.source, example.line, None, f"tag {unknown[0]!r} is not in the tag set {list(label_to_id)}"
        )
    input_ids[row, 0] = cls_id
    before, after = contexts[row] if document_context else ([], [])
    position = 1 + len(before)
    input_ids[row, 1:position] = before
    for w, word in enumerate(example.tokens):
      ids = pieces[word]
      if position + len(ids) > length - 1:  # the last position is kept for [SEP]
        truncated_words += len(example.tokens) - w
        break
      input_ids[row, position : position + len(ids)] = ids
      word_index[row, position] = w
      if example.tags is not None:
        labels[row, position] = label_to_id[example.tags[w]]
      position += len(ids)
    input_ids[row, position : position + len(after)] = after
    position += len(after)
    input_ids[row, position] = sep_id
    attention_mask[row, : position + 1] = 1
  return {
    "input_ids": input_ids,
    "attention_mask": attention_mask,
    "token_type_ids": np.zeros((n, length), dtype=np.int32),
    "labels": labels,
    "word_index": word_index,
    "truncated_words": truncated_words,
  }


def _document_contexts(
  examples: Sequence[TaggedExample], pieces: Mapping[str, list[int]], room: int
) -> list[tuple[list[int], list[int]]]:
  """(pieces before, pieces after) each example's sentence, from the other sentences of its document in order:
  whole words nearest first, half the room left by the sentence before it and the rest after it; a side that
  runs out of document gives its room to the other."""
  documents: dict[tuple[str, int | None], list[int]] = {}
  for i, example in enumerate(examples):
    documents.setdefault((example.source, example.document), []).append(i)
  contexts: list[tuple[list[int], list[int]]] = [([], [])] * len(examples)
  for members in documents.values():
    words = [[pieces[w] for w in examples[i].tokens] for i in members]
    for k, i in enumerate(members):
      free = room - sum(len(p) for p in words[k])
      left = [p for sentence in reversed(words[:k]) for p in reversed(sentence)]  # nearest word first
      right = [p for sentence in words[k + 1 :] for p in sentence]
      left_room = max(free // 2, free - sum(len(p) for p in right))
      before = _take_words(left, left_room)
      after = _take_words(right, free - sum(len(p) for p in before))
      contexts[i] = ([t for p in reversed(before) for t in p], [t for p in after for t in p])
  return contexts


def _take_words(words: list[list[int]], room: int) -> list[list[int]]:
  """The leading words of `words` whose pieces fit in `room` (a word goes in whole or not at all)."""
  taken, used = [], 0
  for word in words:
    if used + len(word) > room:
      break
    taken.append(word)
    used += len(word)
  return taken


def check_documents(
  examples: Sequence[TaggedExample], source: str, field: str = "config.data.document_context"
):
  """Document context needs document boundaries: every example of `source` must carry one."""
  if any(e.document is None for e in examples):
    raise TaskDataError(
      f"{field}=True but {source} marks no documents (CoNLL files mark them with -DOCSTART- lines; TFDS's "
      "conll2003 drops them and reorders sentences): give the original CoNLL-2003 files "
      "(--config.data.tfds_name= --config.data.train=eng.train --config.data.validation=eng.testa,eng.testb "
      f"--config.data.format=conll) or set {field}=False (each sentence alone)"
    )


def decode_tags(
  pred_label_ids: Any,
  word_index: Any,
  num_words: Sequence[int],
  id_to_label: Sequence[str] | Mapping[int, str],
) -> list[list[str]]:
  """One tag per word from per-position predictions (N, L) (or logits (N, L, C), argmax taken).

  A word's tag is the prediction at its first sub-token (word_index from tagging_features); words
  without a position (cut by max_seq_length) get "O".
  """
  pred = np.asarray(pred_label_ids)
  if pred.ndim == 3:
    pred = pred.argmax(-1)
  index = np.asarray(word_index)
  if pred.shape != index.shape or pred.ndim != 2:
    raise ValueError(
      f"predictions have shape {pred.shape} and word_index {index.shape}; expected equal (N, L)"
    )
  if len(num_words) != len(index):
    raise ValueError(f"num_words has {len(num_words)} entries for {len(index)} rows; expected one per row")
  out = []
  for row, count in enumerate(num_words):
    tags = ["O"] * int(count)
    for position in np.flatnonzero(index[row] >= 0):
      w = int(index[row, position])
      if w >= count:
        raise ValueError(f"row {row}: word_index {w} at position {position} but the row has {count} words")
      tags[w] = id_to_label[int(pred[row, position])]
    out.append(tags)
  return out
