"""Fine-tuning data for tasks other than SQuAD: reading rows and turning examples into BERT features.

Three task families, as the BERT paper fine-tunes them:
- sequence classification and regression (GLUE, sentiment): one text or a pair, "[CLS] A [SEP] B [SEP]",
  pairs cut longest-first; the model reads [CLS];
- token tagging (CoNLL NER, POS): pre-split words, each through WordPiece on its own; a word's tag
  sits on its first sub-token and the loss skips the rest (the paper's NER setup);
- multiple choice (SWAG): one "[CLS] context [SEP] ending [SEP]" row per choice, scored jointly.

Where rows come from: `read_rows` reads CSV, TSV and JSON lines; `read_conll` reads
CoNLL column files; `tfds_rows` reads a prepared TFDS dataset (array_record, TensorFlow-free).
A row is `(line, dict)`: `line` is the 1-based line where the row starts (CSV/TSV: the header is
line 1) or, for TFDS, the record index + 1. The `source` string names the file, or "tfds:NAME/SPLIT",
in which case messages say "record index N" instead of "line N".

Every problem in the data raises TaskDataError naming the source, the line, the field, the value
found and what was expected.

Conventions in the features: every array is int32 except regression labels (float32). Unlabelled
examples (label None: TFDS test splits write -1) get label -1 (float NaN for regression);
positions the tagging loss must skip get IGNORE (-100). The feature dicts also carry counts of what
max_seq_length cut, as plain ints the caller pops before batching: `truncated` (examples) for
classification, `truncated_words` for tagging. Multiple choice logs its count instead.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "jsonl", "json")
SCHEMES = ("iob2", "iob1", "none")
IGNORE = -100  # the label of positions the loss skips (transformers' convention)
MISSING_LABEL = -1  # what TFDS writes for the labels of test splits
TFDS_PREFIX = "tfds:"
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}
_CONLL_COLUMNS = re.compile(r"[ \t]+")  # only these: tokens may hold other Unicode spaces

Row = tuple[int, dict[str, Any]]


class TaskDataError(ValueError):
  """Task data that does not have the expected shape; the message says where and what."""


def _where(source: str, line: int, field: str | None = None) -> str:
  place = f"record index {line - 1}" if str(source).startswith(TFDS_PREFIX) else f"line {line}"
  return f"{source} {place}" + ("" if field is None else f" field {field!r}")


def _error(source: str, line: int, field: str | None, problem: str) -> TaskDataError:
  return TaskDataError(f"{_where(source, line, field)}: {problem}")


# -------------------------------------------------------------------------------------------------
# Reading rows.


def _read_text(path: str) -> str:
  """A UTF-8 file's text (a leading byte-order mark dropped); errors name the line of a bad byte."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"task data file {path!r} does not exist")
  with open(path, "rb") as f:
    raw = f.read()
  raw = raw.removeprefix(codecs.BOM_UTF8)
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw[: e.start].count(b"\n") + 1
    raise TaskDataError(
      f"{path} line {line}: byte 0x{raw[e.start]:02x} is not UTF-8; expected UTF-8 text "
      "(convert it, e.g. with iconv -t UTF-8)"
    ) from None


def _format_of(path: str, format: str | None) -> str:
  if format is not None:
    if format not in FORMATS:
      raise ValueError(f"format={format!r}; expected one of {FORMATS}")
    return format
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in _SUFFIXES:
    raise ValueError(
      f"cannot tell the format of {path!r} from its suffix {suffix!r}; expected one of "
      f"{sorted(_SUFFIXES)} or format= one of {FORMATS}"
    )
  return _SUFFIXES[suffix]


def _delimited_rows(text: str, path: str, format: str, columns: Sequence[str] | None) -> list[Row]:
  # GLUE's TSVs hold unbalanced quotes inside sentences, so TSV is read with quoting off: a quote is
  # a character like any other. CSV (SWAG) quotes fields the usual way.
  options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if format == "tsv" else {}
  reader = csv.reader(io.StringIO(text, newline=""), **options)
  header = None if columns is None else list(columns)
  rows: list[Row] = []
  end = 0  # the physical line the previous record ended on (a quoted field may span lines)
  try:
    for record in reader:
      start, end = end + 1, reader.line_num
      if not record:  # a blank line
        continue
      if header is None:
        header = record
        seen: dict[str, int] = {}
        for i, name in enumerate(header):
          if name in seen:
            raise TaskDataError(
              f"{path} line {start}: the header names column {name!r} twice (columns {seen[name]} and "
              f"{i}); expected distinct column names"
            )
          seen[name] = i
        continue
      if len(record) != len(header):
        raise TaskDataError(
          f"{path} line {start}: {len(record)} fields, but the header has {len(header)} columns "
          f"{header}; expected one value per column"
          + (" (TSV is read with quoting off)" if format == "tsv" else "")
        )
      rows.append((start, dict(zip(header, record))))
  except csv.Error as e:
    raise TaskDataError(f"{path} line {reader.line_num}: cannot parse {format.upper()} ({e})") from None
  if header is None:
    raise TaskDataError(f"{path} is empty; expected a header row naming the columns, then data rows")
  if not rows:
    raise TaskDataError(f"{path} has no data rows (columns {header}); expected at least one row")
  return rows


def _json_rows(text: str, path: str) -> list[Row]:
  if text.lstrip().startswith("["):
    raise TaskDataError(
      f"{path} holds one JSON array; expected JSON lines, one object per line (jq -c '.[]' converts it)"
    )
  rows = []
  for lineno, line in enumerate(text.split("\n"), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise TaskDataError(
        f"{path} line {lineno}: not valid JSON ({e.msg}, column {e.colno}); expected one JSON object per line"
      ) from None
    if not isinstance(obj, dict):
      raise TaskDataError(f"{path} line {lineno}: JSON {type(obj).__name__}; expected an object per line")
    rows.append((lineno, obj))
  if not rows:
    raise TaskDataError(f"{path} holds no rows; expected JSON objects, one per line")
  return rows


def read_rows(
  path: str | os.PathLike, format: str | None = None, *, columns: Sequence[str] | None = None
) -> list[Row]:
  """Rows of a task file as (line, row dict): .csv, .tsv, .jsonl or .json (by suffix, or `format`).

  CSV and TSV need a header row naming the columns; their values are strings. TSV is read with
  quoting off, as GLUE's files need. For a file without a header (GLUE's CoLA train/dev), pass the
  column names as `columns`; every line is then a row. .jsonl and .json files hold JSON lines (one
  object per line, as Hugging Face datasets' to_json writes). Blank lines are skipped; a file
  without rows is an error.
  """
  path = os.fspath(path)
  format = _format_of(path, format)
  text = _read_text(path)
  if format in ("csv", "tsv"):
    return _delimited_rows(text, path, format, columns)
  if columns is not None:
    raise ValueError(f"columns= is for CSV/TSV files without a header; {path!r} is read as {format}")
  return _json_rows(text, path)


# -------------------------------------------------------------------------------------------------
# TFDS.


def decode_tfds_value(value: Any) -> Any:
  """A TFDS data_source value as plain Python: bytes to str, numpy scalars and arrays to numbers and
  lists, nested dicts and lists element by element. ClassLabel values stay ints."""
  if isinstance(value, bytes):  # np.bytes_ too
    return value.decode("utf-8")
  if isinstance(value, str):
    return str(value)
  if isinstance(value, np.ndarray):
    if value.dtype.kind in "biuf":
      return value.tolist()
    return decode_tfds_value(value.item()) if value.ndim == 0 else [decode_tfds_value(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, Mapping):
    return {k: decode_tfds_value(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [decode_tfds_value(v) for v in value]
  return value


def decode_tfds_record(record: Mapping[str, Any], source: str = "tfds", index: int = 0) -> dict[str, Any]:
  """One TFDS record with every field decoded (decode_tfds_value); bad UTF-8 names the field."""
  out = {}
  for field, value in record.items():
    try:
      out[field] = decode_tfds_value(value)
    except UnicodeDecodeError as e:
      raise _error(source, index + 1, field, f"text is not UTF-8 (byte offset {e.start})") from None
  return out


def tfds_rows(name: str, split: str, data_dir: str | os.PathLike | None = None) -> list[Row]:
  """Rows of a prepared TFDS dataset split, read TensorFlow-free with `tfds.data_source`.

  The dataset must be in data_dir in array_record format (nothing is downloaded). A row's line is
  its record index + 1, so rows from files and from TFDS look alike.
  """
  import tensorflow_datasets as tfds  # heavy; only TFDS sources pay for it

  source = f"{TFDS_PREFIX}{name}/{split}"
  data_dir = None if data_dir is None else os.fspath(data_dir)
  try:
    records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # TFDS raises several types; all mean the same to the user
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise FileNotFoundError(
      f"cannot open TFDS dataset {name!r} split {split!r} in data_dir={data_dir!r}: {reason} "
      "Prepare it first in array_record format (tfds.data_source reads no other format, and nothing "
      "is downloaded here)"
    ) from e
  rows = [(i + 1, decode_tfds_record(records[i], source, i)) for i in range(len(records))]
  if not rows:
    raise TaskDataError(f"{source} holds no records")
  return rows


def class_label_names(feature: Any) -> list[str] | None:
  """The names of a TFDS ClassLabel feature, or of a Sequence of ClassLabel; None for other features."""
  import tensorflow_datasets as tfds

  if isinstance(feature, tfds.features.Sequence):
    feature = feature.feature
  if isinstance(feature, tfds.features.ClassLabel):
    return list(feature.names)
  return None


def tfds_label_names(
  name: str, data_dir: str | os.PathLike | None = None, field: str = "label"
) -> list[str] | None:
  """The label names of a TFDS dataset's `field` from its builder info: a ClassLabel, or a Sequence of
  ClassLabel (conll2003's ner_tags); None when the field holds other values (STS-B's float scores)."""
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
  features = builder.info.features
  if field not in features:
    raise TaskDataError(f"TFDS dataset {name!r} has no field {field!r}; its fields are {sorted(features)}")
  return class_label_names(features[field])


# -------------------------------------------------------------------------------------------------
# Fields.


def _value(row: Mapping[str, Any], field: str, source: str, line: int) -> Any:
  if field not in row:
    raise _error(source, line, field, f"no such column; the row has columns {list(row)}")
  return row[field]


def _text(row: Mapping[str, Any], field: str, source: str, line: int) -> str:
  value = _value(row, field, source, line)
  if not isinstance(value, str):
    raise _error(source, line, field, f"{type(value).__name__} {value!r}; expected text")
  if not value.strip():
    raise _error(source, line, field, f"text {value!r} is empty; expected text")
  return value


def _label_name(value: Any) -> str:
  """The name a label value goes by: strings as they are, numbers in decimal, booleans as in JSON."""
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def _is_missing(value: Any) -> bool:
  # Only a number: in a text file "-1" may be a real label.
  return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and value == MISSING_LABEL


def _sort_labels(names: Iterable[str]) -> list[str]:
  names = sorted(set(names))
  try:  # numeric labels ("1".."10") in numeric order
    return sorted(names, key=int)
  except ValueError:
    return names


def infer_labels(rows: Iterable[Row], label_field: str = "label", *, source: str = "rows") -> list[str]:
  """The distinct label names in rows, sorted (numerically when every name is an integer).

  Call it on training rows: a label that only an evaluation split holds must not get an id the
  model never learned. TFDS's -1 (no label) is left out.
  """
  names = []
  for line, row in rows:
    value = _value(row, label_field, source, line)
    if value is None or _is_missing(value):
      continue
    names.append(_label_name(value))
  if not names:
    raise TaskDataError(f"{source}: no labels in field {label_field!r}; expected labelled training rows")
  return _sort_labels(names)


# -------------------------------------------------------------------------------------------------
# Classification and regression.


@dataclasses.dataclass
class TextExample:
  """One text (or pair) and its label: a class id, a float score, or None when unlabelled."""

  text: str
  pair: str | None
  label: int | float | None
  line: int
  source: str = ""


def _label_ids(labels: Sequence[Any]) -> dict[str, int]:
  ids: dict[str, int] = {}
  for i, label in enumerate(labels):
    name = _label_name(label)
    if name in ids:
      raise ValueError(
        f"labels lists {name!r} twice (positions {ids[name]} and {i}); expected distinct labels"
      )
    ids[name] = i
  return ids


def _class_id(
  value: Any, label_ids: dict[str, int], names: list[str], source: str, line: int, field: str
) -> int:
  """A label's id: by name, or for an int that names no label, as an index (TFDS ClassLabel values)."""
  name = _label_name(value)
  if name in label_ids:
    return label_ids[name]
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(names):
    return int(value)
  raise _error(source, line, field, f"label {value!r} is not one of the labels {names}")


def _regression_label(value: Any, source: str, line: int, field: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (str, int, float, np.number)):
    raise _error(source, line, field, f"{type(value).__name__} {value!r}; expected a number")
  try:
    score = float(value)
  except ValueError:
    raise _error(source, line, field, f"{value!r} is not a number; expected a float score") from None
  if not math.isfinite(score):
    raise _error(source, line, field, f"{value!r} is not finite; expected a float score")
  return score


def classification_examples(
  rows: Iterable[Row],
  source: str,
  *,
  text_field: str,
  pair_field: str | None = None,
  label_field: str | None = "label",
  labels: Sequence[Any] | None = None,
  regression: bool = False,
) -> list[TextExample]:
  """Text (and pair) examples with class ids (position in `labels`) or float scores (regression).

  A label value matches a label by name (numbers by their decimal spelling); an int that names no
  label is an index into `labels`, as TFDS stores ClassLabel values. A numeric -1 means unlabelled
  (TFDS test splits, STS-B's float -1.0 included) and gives label None; so does label_field=None
  (files without labels). Text in a CSV/TSV is never that marker: "-1" there is a label or a score
  like any other. The label set comes from the caller (task config, tfds_label_names, or
  infer_labels on training rows).
  """
  source = str(source)
  if label_field is not None and not regression and labels is None:
    raise TaskDataError(
      f"{source}: classification needs the label set: pass labels= (from the task config, "
      f"tfds_label_names, or infer_labels(training rows, {label_field!r}))"
    )
  label_ids = {} if labels is None else _label_ids(labels)
  names = list(label_ids)
  examples = []
  for line, row in rows:
    text = _text(row, text_field, source, line)
    pair = None if pair_field is None else _text(row, pair_field, source, line)
    label: int | float | None = None
    if label_field is not None:
      value = _value(row, label_field, source, line)
      if value is None:
        raise _error(
          source, line, label_field, "null; expected a label (pass label_field=None for unlabelled data)"
        )
      if _is_missing(value):
        label = None
      elif regression:
        label = _regression_label(value, source, line, label_field)
      else:
        label = _class_id(value, label_ids, names, source, line, label_field)
    examples.append(TextExample(text, pair, label, line, source))
  if not examples:
    raise TaskDataError(f"{source}: no rows; expected at least one example")
  return examples


def _check_length(max_seq_length: Any, minimum: int) -> int:
  if (
    isinstance(max_seq_length, bool)
    or not isinstance(max_seq_length, (int, np.integer))
    or max_seq_length < minimum
  ):
    raise ValueError(
      f"max_seq_length must be an int of at least {minimum} (the special tokens), got {max_seq_length!r}"
    )
  return int(max_seq_length)


def _pad(rows: Sequence[Sequence[int]], width: int, value: int) -> np.ndarray:
  out = np.full((len(rows), width), value, dtype=np.int32)
  for i, row in enumerate(rows):
    out[i, : len(row)] = row
  return out


def _encode(tokenizer, texts: list[str], pairs: list[str] | None, max_seq_length: int):
  """input_ids, token_type_ids, attention_mask (N, L) and how many rows max_seq_length cut.

  Rows are encoded whole first to see which are too long; only those are encoded again with the
  tokenizer's own truncation (BERT's longest-first for pairs).
  """
  full = tokenizer(texts, pairs, truncation=False, padding=False)
  ids, types = full["input_ids"], full["token_type_ids"]
  over = [i for i, row in enumerate(ids) if len(row) > max_seq_length]
  if over:
    cut = tokenizer(
      [texts[i] for i in over],
      None if pairs is None else [pairs[i] for i in over],
      max_length=max_seq_length,
      truncation=True,
      padding=False,
    )
    for k, i in enumerate(over):
      ids[i], types[i] = cut["input_ids"][k], cut["token_type_ids"][k]
  lengths = np.array([len(row) for row in ids], dtype=np.int64)
  mask = (np.arange(max_seq_length)[None, :] < lengths[:, None]).astype(np.int32)
  return _pad(ids, max_seq_length, tokenizer.pad_id), _pad(types, max_seq_length, 0), mask, len(over)


def classification_features(
  examples: Sequence[TextExample], tokenizer, max_seq_length: int
) -> dict[str, Any]:
  """input_ids, attention_mask, token_type_ids (N, L) padded to max_seq_length; labels (N,): int32
  class ids (-1 when unlabelled) or float32 scores (NaN when unlabelled); `truncated`: an int, the
  number of examples cut to max_seq_length (pairs longest-first). Pop it before batching."""
  if not examples:
    raise ValueError("classification_features: no examples")
  has_pair = [e.pair is not None for e in examples]
  if any(has_pair) and not all(has_pair):
    odd = examples[has_pair.index(not has_pair[0])]
    raise TaskDataError(
      f"{_where(odd.source, odd.line)}: {'has' if odd.pair is not None else 'lacks'} a pair text, unlike "
      f"{_where(examples[0].source, examples[0].line)}; expected all single texts or all pairs"
    )
  length = _check_length(max_seq_length, 3 if has_pair[0] else 2)
  texts = [e.text for e in examples]
  pairs = [e.pair for e in examples] if has_pair[0] else None
  input_ids, token_type_ids, attention_mask, truncated = _encode(tokenizer, texts, pairs, length)
  if any(isinstance(e.label, float) for e in examples):
    labels = np.array([np.nan if e.label is None else e.label for e in examples], dtype=np.float32)
  else:
    labels = np.array([-1 if e.label is None else e.label for e in examples], dtype=np.int32)
  return {
    "input_ids": input_ids,
    "attention_mask": attention_mask,
    "token_type_ids": token_type_ids,
    "labels": labels,
    "truncated": truncated,
  }


# -------------------------------------------------------------------------------------------------
# Token tagging.


@dataclasses.dataclass
class TaggedExample:
  """Pre-split words and one tag per word (None when unlabelled); line: where the sentence starts."""

  tokens: list[str]
  tags: list[str] | None
  line: int
  source: str = ""


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
  line, a blank line between sentences; "-DOCSTART-" lines are skipped.

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

  def flush() -> None:
    if not words:
      return
    sentence_tags = None
    if tag_column is not None:
      problem = _scheme_problem(tags, scheme)
      if problem:
        i, reason = problem
        raise _error(path, lines[i], None, f"column {tag_column}: {reason}")
      sentence_tags = iob1_to_iob2(tags) if scheme == "iob1" else list(tags)
    examples.append(TaggedExample(list(words), sentence_tags, lines[0], path))
    words.clear()
    tags.clear()
    lines.clear()

  for lineno, line in enumerate(text.split("\n"), 1):
    columns = [c for c in _CONLL_COLUMNS.split(line.strip(" \t\r")) if c]
    if not columns or columns[0] == "-DOCSTART-":
      flush()
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
  return examples


def _string_list(value: Any, source: str, line: int, field: str, what: str) -> list:
  if not isinstance(value, (list, tuple)):
    raise _error(source, line, field, f"{type(value).__name__} {value!r}; expected a list of {what}")
  return list(value)


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
    position = 1
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


# -------------------------------------------------------------------------------------------------
# Multiple choice.


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
