"""Task rows: reading them from CSV, TSV and JSON-lines files and prepared TFDS datasets, and reading
their fields, with errors that name the source, the line and the field.

A row is `(line, dict)`: `line` is the 1-based line where the row starts (CSV/TSV: the header is
line 1) or, for TFDS, the record index + 1. The `source` string names the file, or "tfds:NAME/SPLIT",
in which case messages say "record index N" instead of "line N". The task families (classification,
tagging, multiple_choice) build their examples from these rows; bert_jax.data.tasks re-exports them all.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax.data.tfds_source import open_data_source

FORMATS = ("csv", "tsv", "jsonl", "json")
MISSING_LABEL = -1  # what TFDS writes for the labels of test splits
TFDS_PREFIX = "tfds:"
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}

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
  source = f"{TFDS_PREFIX}{name}/{split}"
  records = open_data_source(name, split, data_dir)
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


def check_tfds_splits(
  name: str, data_dir: str | os.PathLike | None, requested: Mapping[str, list[str]]
) -> None:
  """Every split a config field asks for (field -> splits) is one the prepared TFDS dataset defines; else an
  error naming the field and the dataset's splits (conll2003's are train/dev/test, not GLUE's validation). A
  dataset not prepared yet is left to the reader, whose error says how to prepare it."""
  import tensorflow_datasets as tfds

  try:
    known = sorted(tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir)).info.splits)
  except Exception:  # noqa: BLE001 - not prepared, or no such builder: tfds_rows reports it with its remedy
    return
  if not known:
    return
  for field, splits in requested.items():
    for expression in splits:
      # TFDS split expressions: "train[:10%]", "train+validation", "validation[50%:]".
      for split in (part.split("[", 1)[0].strip() for part in expression.split("+")):
        if split not in known:
          raise TaskDataError(
            f"{field}={expression!r}: TFDS dataset {name!r} has no split {split!r}; its splits are {known}"
          )


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


def _string_list(value: Any, source: str, line: int, field: str, what: str) -> list:
  if not isinstance(value, (list, tuple)):
    raise _error(source, line, field, f"{type(value).__name__} {value!r}; expected a list of {what}")
  return list(value)


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
