"""Raw text in, documents out: a document is a list of sentences (str), the unit BERT's pair tasks
draw from (both segments of a pair come from one document; NSP's random second segment from another).

Where the text comes from:
- local files (paths or glob patterns), read as UTF-8;
- a TFDS text dataset the user has prepared in array_record format (for example
  `wikipedia/20230601.en`, field `text`), read by random access with `tfds.data_source`, which
  needs no TensorFlow.

How text is cut into documents (`format`):
- "bert": BERT's own format. One sentence per line; a blank line ends a document.
- "paragraphs": wrapped prose (a book, an essay). Lines up to a blank line form a paragraph; each
  paragraph is one document, cut into sentences by `split_sentences`. A paragraph is the largest
  unit that stays on one topic in any prose file, and it keeps a one-file corpus usable (validation
  holds out whole documents).
- "lines": each non-blank line is one document, cut into sentences (a corpus of one article or
  review per line).
- "document": the whole file, or the whole TFDS record, is one document; each line (paragraph) is cut
  into sentences. The natural reading of a Wikipedia article, and the default for TFDS sources.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from bert_jax.data.tfds_source import open_data_source

FORMATS = ("bert", "paragraphs", "lines", "document")
TFDS_PREFIX = "tfds:"

# Words whose period does not end a sentence (lower-cased, final period dropped; "e.g" keeps its
# inner one). Short on purpose: a missing entry costs one extra boundary, a wrong one ("no", which
# also ends sentences) glues two sentences together, and no list is right for every corpus.
ABBREVIATIONS = frozenset(
  """
  mr mrs ms dr prof st sr jr mt ft vs etc e.g i.e cf al approx dept est fig gen gov inc ltd
  co corp vol rev sgt capt col lt cmdr hon jan feb mar apr jun jul aug sep sept oct nov dec
  u.s u.k a.m p.m ph.d
  """.split()
)

# Sentence-final punctuation, any closing quotes or brackets, then the whitespace before the next
# sentence; whether it really is a boundary depends on what follows (see split_sentences).
_OPENERS = "\"'“‘«([¿¡"
_LATIN_END = re.compile(r"[.!?]+[\"'”’»)\]]*\s+")
_CJK_END = re.compile(r"[。！？]+[」』”’）)]*")
_WORD_BEFORE = re.compile(r"(\S+)$")


def _is_abbreviation(text: str, period: int) -> bool:
  """Whether the period at `period` closes an abbreviation or an initial ("J. R. R. Tolkien")."""
  # The word is searched for in the 64 characters before the period, not from the start of the text: from 0, a
  # paragraph of n characters costs O(n) per period, O(n^2) in all (a State of the Union speech is one paragraph).
  # A word longer than the window cannot be an abbreviation or an initial either way.
  m = _WORD_BEFORE.search(text, max(0, period - 64), period)
  if not m:
    return False
  word = m.group(1).lstrip(_OPENERS)
  if len(word) == 1 and word.isalpha() and word.isupper():
    return True
  return word.lower() in ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
  """Cuts text into sentences with a small rule set (no model, no language data).

  A boundary is a run of . ! ? (plus any closing quotes/brackets) followed by whitespace and a
  capital letter or an opening quote/bracket, except after an abbreviation (ABBREVIATIONS) or a
  single capital initial; or a CJK 。！？ (plus closing quotes), with or without a space after it.
  Whitespace inside a sentence is collapsed to single spaces. Lower-case starts ("e.g. this") and
  numbers never open a new sentence, so an uncertain case stays one longer sentence: BERT's pair
  tasks tolerate long sentences better than sentences cut mid-thought.
  """
  text = " ".join(text.split())
  if not text:
    return []
  cuts = []
  for m in _LATIN_END.finditer(text):
    following = text[m.end() : m.end() + 1]
    if not (following.isupper() or (following and following in _OPENERS)):
      continue
    if text[m.start() : m.end()].rstrip() == "." and _is_abbreviation(text, m.start()):
      continue
    cuts.append(m.end())
  cuts.extend(m.end() for m in _CJK_END.finditer(text))
  sentences, start = [], 0
  for cut in sorted(set(cuts)):
    piece = text[start:cut].strip()
    if piece:
      sentences.append(piece)
    start = cut
  tail = text[start:].strip()
  if tail:
    sentences.append(tail)
  return sentences


def parse_documents(lines: Iterable[str], format: str) -> Iterator[list[str]]:
  """Documents from the lines of one file or record (see the module docstring for the formats)."""
  if format not in FORMATS:
    raise ValueError(f"unknown text format {format!r}; expected one of {FORMATS}")
  if format == "bert":
    doc: list[str] = []
    for line in lines:
      line = line.strip()
      if line:
        doc.append(line)
      elif doc:
        yield doc
        doc = []
    if doc:
      yield doc
  elif format == "lines":
    for line in lines:
      sentences = split_sentences(line)
      if sentences:
        yield sentences
  elif format == "paragraphs":
    paragraph: list[str] = []
    for line in lines:
      if line.strip():
        paragraph.append(line)
      elif paragraph:
        sentences = split_sentences(" ".join(paragraph))
        if sentences:
          yield sentences
        paragraph = []
    if paragraph:
      sentences = split_sentences(" ".join(paragraph))
      if sentences:
        yield sentences
  else:  # document
    # Lines are paragraphs here (Wikipedia's text field), so a sentence never runs across a line.
    doc = [s for line in lines for s in split_sentences(line)]
    if doc:
      yield doc


# -------------------------------------------------------------------------------------------------
# Local files.


def expand_paths(patterns: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
  """Paths and glob patterns to a sorted, de-duplicated list of files; each pattern must match."""
  if isinstance(patterns, (str, os.PathLike)):
    patterns = [patterns]
  patterns = [os.fspath(p) for p in patterns]
  if not patterns:
    raise ValueError("no text files given: pass at least one path or glob pattern")
  paths: list[str] = []
  for pattern in patterns:
    if glob.has_magic(pattern):
      matched = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
      if not matched:
        raise FileNotFoundError(f"text file pattern {pattern!r} matches no file")
      paths.extend(matched)
    elif os.path.isfile(pattern):
      paths.append(pattern)
    elif os.path.isdir(pattern):
      raise IsADirectoryError(
        f"text path {pattern!r} is a directory; give files or a glob such as '{pattern}/*.txt'"
      )
    else:
      raise FileNotFoundError(f"text file {pattern!r} does not exist")
  return list(dict.fromkeys(paths))


def read_lines(path: str) -> Iterator[str]:
  """The lines of a UTF-8 file, without line ends; a leading byte-order mark is dropped."""
  offset = 0
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(
          f"text file {path!r} is not UTF-8: line {lineno}, byte offset {offset + e.start} "
          f"(byte 0x{raw[e.start]:02x}); convert it, e.g. with iconv -t UTF-8"
        ) from None
      if lineno == 1:
        line = line.removeprefix("\ufeff")
      offset += len(raw)
      yield line.rstrip("\r\n")


class LocalTextSource:
  """Documents from local UTF-8 files, read in sorted path order."""

  def __init__(self, patterns: str | os.PathLike | Sequence[str | os.PathLike], format: str = "bert"):
    if format not in FORMATS:
      raise ValueError(f"unknown text format {format!r}; expected one of {FORMATS}")
    self.patterns = (
      [os.fspath(patterns)] if isinstance(patterns, (str, os.PathLike)) else list(map(os.fspath, patterns))
    )
    self.format = format
    self.paths = expand_paths(self.patterns)

  def __repr__(self) -> str:
    return f"LocalTextSource({self.patterns!r}, format={self.format!r})"

  def documents(self) -> Iterator[list[str]]:
    count = 0
    for path in self.paths:
      for doc in parse_documents(read_lines(path), self.format):
        count += 1
        yield doc
    if not count:
      raise ValueError(f"no text in {self.paths}: the files are empty or hold only blank lines")

  def fingerprint(self) -> dict[str, Any]:
    """What identifies this corpus: file names, sizes and a hash of their bytes."""
    digest = hashlib.sha256()
    files = []
    for path in self.paths:
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      digest.update(b"\0")
      files.append({"path": os.path.abspath(path), "bytes": os.path.getsize(path)})
    return {"kind": "files", "format": self.format, "files": files, "sha256": digest.hexdigest()}


# -------------------------------------------------------------------------------------------------
# TFDS text datasets.


class TfdsTextSource:
  """Documents from a prepared TFDS dataset with a text field, by random access (TF-free).

  The dataset must already be in `data_dir` in array_record format (`tfds.data_source` reads
  nothing else and this never downloads); each record's `field` is cut into documents by `format`.
  """

  def __init__(
    self,
    name: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    field: str = "text",
    format: str = "document",
  ):
    if format not in FORMATS:
      raise ValueError(f"unknown text format {format!r}; expected one of {FORMATS}")
    self.name, self.split, self.field, self.format = name, split, field, format
    self.data_dir = None if data_dir is None else os.fspath(data_dir)
    self._source = None

  def __repr__(self) -> str:
    return f"TfdsTextSource({self.name!r}, split={self.split!r}, data_dir={self.data_dir!r})"

  @property
  def source(self):
    if self._source is None:
      self._source = open_data_source(self.name, self.split, self.data_dir)
    return self._source

  def documents(self) -> Iterator[list[str]]:
    source, count = self.source, 0
    for i in range(len(source)):
      record = source[i]
      if self.field not in record:
        raise KeyError(
          f"TFDS dataset {self.name!r} has no field {self.field!r}; its fields are {sorted(record)}"
        )
      text = record[self.field]
      if isinstance(text, bytes):
        try:
          text = text.decode("utf-8")
        except UnicodeDecodeError as e:
          raise ValueError(
            f"TFDS dataset {self.name!r} split {self.split!r} record {i} field {self.field!r} is not "
            f"UTF-8 (byte offset {e.start})"
          ) from None
      # Only "\n" ends a line, as in files (str.splitlines would also cut at form feeds, NEL, U+2028).
      for doc in parse_documents((line.rstrip("\r") for line in text.split("\n")), self.format):
        count += 1
        yield doc
    if not count:
      raise ValueError(f"no text in TFDS dataset {self.name!r} split {self.split!r} field {self.field!r}")

  def fingerprint(self) -> dict[str, Any]:
    # Prepared TFDS datasets are immutable per version; the name carries the version when pinned.
    return {
      "kind": "tfds",
      "name": self.name,
      "split": self.split,
      "field": self.field,
      "format": self.format,
      "records": len(self.source),
    }


def open_text_source(
  spec: str | os.PathLike | Sequence[str | os.PathLike],
  *,
  format: str | None = None,
  split: str = "train",
  data_dir: str | os.PathLike | None = None,
  field: str = "text",
) -> LocalTextSource | TfdsTextSource:
  """A text source from a config value: "tfds:NAME[/CONFIG][:VERSION]" or file paths/globs.

  Several files may be given as a list or as one comma-separated string. `format` defaults to
  "document" for TFDS (a record is an article) and "bert" for files.
  """
  if isinstance(spec, str) and spec.startswith(TFDS_PREFIX):
    name = spec[len(TFDS_PREFIX) :]
    if not name:
      raise ValueError(f"text source {spec!r} names no TFDS dataset; expected 'tfds:NAME'")
    return TfdsTextSource(name, split=split, data_dir=data_dir, field=field, format=format or "document")
  if isinstance(spec, str) and "," in spec:
    spec = [s.strip() for s in spec.split(",") if s.strip()]
  return LocalTextSource(spec, format=format or "bert")
