"""SQuAD v1.1 / v2.0 for span question answering: reading examples, and the one place to import all of
SQuAD's data handling from (it re-exports the windows and the answers).

- `read_squad` reads the official JSON layout (both versions) and checks every answer against its
  context; `read_squad_tfds` reads a prepared TFDS `squad/v1.1` or `squad/v2.0` (array_record, TF-free).
  They live here; `QAExample`, what they return, lives in squad_examples.py.
- `make_features` (squad_features.py) turns examples into fixed-length windows "[CLS] question [SEP]
  context [SEP]" that slide over long contexts by `doc_stride` tokens, as BERT's reference
  `run_squad.py` does.
- `postprocess` (squad_answers.py) turns per-window start/end logits back into one answer per
  question, with the exact character span in the context.

Answers are located by character offsets throughout (the tokenizer gives each token its characters in
the original text), never by re-tokenizing or detokenizing, so an answer is always a slice of its
context.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from bert_jax.data.squad_answers import Prediction, postprocess
from bert_jax.data.squad_examples import MAX_MESSAGES, QAExample
from bert_jax.data.squad_features import QAFeatures, doc_windows, make_features
from bert_jax.data.tfds_source import open_data_source

logger = logging.getLogger(__name__)

__all__ = [
  "MAX_MESSAGES",
  "Prediction",
  "QAExample",
  "QAFeatures",
  "ReadReport",
  "SquadFormatError",
  "doc_windows",
  "example_from_record",
  "make_features",
  "postprocess",
  "read_squad",
  "read_squad_tfds",
]


class SquadFormatError(ValueError):
  """A SQuAD file or record that does not follow the official layout."""


@dataclasses.dataclass
class ReadReport:
  """What reading a SQuAD source found: counts over all questions and the first problems in words.

  questions: questions in the source; answers: answers kept; skipped_answers: answers whose
  answer_start does not point at their text (or whose text is empty); dropped_questions: answerable
  questions left with no answer, which are not returned; impossible: v2.0 questions with no answer.
  """

  questions: int = 0
  answers: int = 0
  skipped_answers: int = 0
  dropped_questions: int = 0
  impossible: int = 0
  messages: list[str] = dataclasses.field(default_factory=list)

  def note(self, message: str) -> None:
    if len(self.messages) < MAX_MESSAGES:
      self.messages.append(message)

  def summary(self) -> str:
    return (
      f"{self.questions} questions ({self.impossible} unanswerable), {self.answers} answers; "
      f"skipped {self.skipped_answers} answers that do not match their context, dropped "
      f"{self.dropped_questions} questions left with no answer"
    )


# -------------------------------------------------------------------------------------------------
# Reading.


def _check_answers(
  source: str, qid: str, context: str, answers: Iterable[tuple[str, int]], report: ReadReport
) -> list[tuple[str, int]]:
  """The answers whose text is at answer_start in the context; the others are logged and counted."""
  kept = []
  for text, start in answers:
    if not text:
      problem = f"{source}: question {qid!r}: answer at {start} has empty text; skipped"
    elif 0 <= start and context[start : start + len(text)] == text:
      kept.append((text, start))
      continue
    elif start < 0 or start + len(text) > len(context):
      problem = (
        f"{source}: question {qid!r}: answer {text!r} at answer_start={start} runs outside the context "
        f"({len(context)} characters); skipped"
      )
    else:
      problem = (
        f"{source}: question {qid!r}: answer {text!r} is not at answer_start={start}; the context has "
        f"{context[start : start + len(text)]!r} there; skipped"
      )
    report.skipped_answers += 1
    report.note(problem)
    if report.skipped_answers <= MAX_MESSAGES:
      logger.warning("%s", problem)
  report.answers += len(kept)
  return kept


def _finish(
  source: str, qid: str, kept: list, had_answers: bool, is_impossible: bool, report: ReadReport
) -> bool:
  """Counts a checked question; False when it is answerable but has no answer left (dropped)."""
  report.questions += 1
  if is_impossible:
    report.impossible += 1
    return True
  if kept:
    return True
  report.dropped_questions += 1
  why = "every answer was skipped" if had_answers else "it has no answers and is not marked is_impossible"
  report.note(f"{source}: question {qid!r} dropped: {why}")
  return False


def _log_report(source: str, report: ReadReport) -> None:
  if report.skipped_answers > MAX_MESSAGES:
    logger.warning(
      "%s: %d more answers skipped (not logged one by one)", source, report.skipped_answers - MAX_MESSAGES
    )
  log = logger.warning if report.skipped_answers or report.dropped_questions else logger.info
  log("%s: %s", source, report.summary())


def _load_json(path: str) -> Any:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SQuAD file {path!r} does not exist")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise SquadFormatError(f"{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
  if not text.strip():
    raise SquadFormatError(f"{path}: the file is empty; expected SQuAD JSON ({{\"data\": [...]}})")
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise SquadFormatError(f"{path}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def _field(obj: Any, key: str, kind: type | tuple[type, ...], where: str, path: str) -> Any:
  if not isinstance(obj, dict):
    raise SquadFormatError(f"{path}: {where}: expected a JSON object, got {type(obj).__name__}")
  if key not in obj:
    raise SquadFormatError(f"{path}: {where}: missing {json.dumps(key)}")
  value = obj[key]
  # bool is an int to Python; never a valid answer_start or id.
  if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
    names = " or ".join(_TYPE_NAMES[k] for k in _as_tuple(kind))
    raise SquadFormatError(f"{path}: {where}.{key}: expected {names}, got {_shown(value)}")
  return value


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", bool: "true/false", dict: "an object"}


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
  return kind if isinstance(kind, tuple) else (kind,)


def _shown(value: Any) -> str:
  text = json.dumps(value, ensure_ascii=False)
  return f"{text[:60]}..." if len(text) > 60 else text


def read_squad(path: str | os.PathLike) -> tuple[list[QAExample], ReadReport]:
  """Reads a SQuAD v1.1 or v2.0 JSON file: data[].paragraphs[].{context, qas[]}.

  Every answer is checked against its context (context[answer_start:][:len(text)] == text); one that
  does not match is logged, counted and skipped, and an answerable question left with no answer is
  dropped (counted in the report, never silently). v2.0's plausible_answers are not read: they are
  not answers. Layout errors raise SquadFormatError naming the file and the JSON path.
  """
  path = os.fspath(path)
  doc = _load_json(path)
  if not isinstance(doc, dict) or "data" not in doc:
    got = f"an object with keys {sorted(doc)[:8]}" if isinstance(doc, dict) else type(doc).__name__
    raise SquadFormatError(f"{path}: expected the SQuAD layout {{\"data\": [...]}}, got {got}")
  data = _field(doc, "data", list, "(top level)", path)
  report, examples, first_seen = ReadReport(), [], {}
  for i, article in enumerate(data):
    where = f"data[{i}]"
    title = (
      _field(article, "title", str, where, path) if isinstance(article, dict) and "title" in article else ""
    )
    for j, paragraph in enumerate(_field(article, "paragraphs", list, where, path)):
      where_p = f"{where}.paragraphs[{j}]"
      context = _field(paragraph, "context", str, where_p, path)
      for k, qa in enumerate(_field(paragraph, "qas", list, where_p, path)):
        where_q = f"{where_p}.qas[{k}]"
        qid = str(_field(qa, "id", (str, int), where_q, path))
        if qid in first_seen:
          raise SquadFormatError(f"{path}: {where_q}: id {qid!r} already used at {first_seen[qid]}")
        first_seen[qid] = where_q
        question = _field(qa, "question", str, where_q, path)
        is_impossible = _field(qa, "is_impossible", bool, where_q, path) if "is_impossible" in qa else False
        raw_answers = _field(qa, "answers", list, where_q, path)
        if is_impossible and raw_answers:
          raise SquadFormatError(
            f"{path}: {where_q}: is_impossible is true but it lists {len(raw_answers)} answers "
            "(v2.0 keeps those under plausible_answers)"
          )
        answers = []
        for a, answer in enumerate(raw_answers):
          where_a = f"{where_q}.answers[{a}]"
          answers.append(
            (_field(answer, "text", str, where_a, path), _field(answer, "answer_start", int, where_a, path))
          )
        kept = _check_answers(path, qid, context, answers, report)
        if _finish(path, qid, kept, bool(answers), is_impossible, report):
          examples.append(QAExample(qid, question, context, kept, is_impossible, title))
  if not report.questions:
    raise SquadFormatError(f"{path}: holds no questions (data has {len(data)} articles)")
  _log_report(path, report)
  if not examples:
    raise SquadFormatError(
      f"{path}: no question has a usable answer: {report.summary()}; first: {report.messages[0]}"
    )
  return examples, report


def _text(value: Any, what: str) -> str:
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  if isinstance(value, bytes):  # np.bytes_ is bytes
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise SquadFormatError(f"{what} is not UTF-8 (byte offset {e.start})") from None
  if isinstance(value, str):
    return str(value)
  raise SquadFormatError(f"{what}: expected text (str or bytes), got {type(value).__name__}")


def example_from_record(record: Mapping[str, Any]) -> QAExample:
  """A QAExample from one TFDS squad record (id, title, context, question, answers{text, answer_start},
  and for v2.0 is_impossible), as `tfds.data_source` returns it: text as bytes, sequences as arrays.

  The answers are as in the record, not yet checked against the context (read_squad_tfds checks them).
  """
  for key in ("id", "context", "question", "answers"):
    if key not in record:
      raise SquadFormatError(f"TFDS record: missing {key!r}; its fields are {sorted(record)}")
  qid = _text(record["id"], "TFDS record id")
  where = f"TFDS record {qid!r}"
  answers = record["answers"]
  if not isinstance(answers, Mapping) or "text" not in answers or "answer_start" not in answers:
    raise SquadFormatError(f"{where}: answers must hold 'text' and 'answer_start' lists, got {answers!r}")
  texts = [_text(t, f"{where} answers.text") for t in answers["text"]]
  starts = [int(s) for s in np.asarray(answers["answer_start"]).reshape(-1)]
  if len(texts) != len(starts):
    raise SquadFormatError(f"{where}: {len(texts)} answer texts but {len(starts)} answer_start values")
  return QAExample(
    qid=qid,
    question=_text(record["question"], f"{where} question"),
    context=_text(record["context"], f"{where} context"),
    answers=list(zip(texts, starts)),
    is_impossible=bool(record.get("is_impossible", False)),
    title=_text(record["title"], f"{where} title") if "title" in record else "",
  )


def read_squad_tfds(name: str, split: str, data_dir: str | os.PathLike | None = None) -> list[QAExample]:
  """Reads a prepared TFDS SQuAD ("squad/v1.1", "squad/v2.0") by random access, without TensorFlow.

  The dataset must be in `data_dir` in array_record format (`tfds.data_source` reads no other
  format; nothing is downloaded). Answers are checked as read_squad checks them.
  """
  source_name = f"TFDS {name}[{split}]"
  data_dir = None if data_dir is None else os.fspath(data_dir)
  source = open_data_source(name, split, data_dir)
  report, examples = ReadReport(), []
  for i in range(len(source)):
    ex = example_from_record(source[i])
    kept = _check_answers(source_name, ex.qid, ex.context, ex.answers, report)
    if _finish(source_name, ex.qid, kept, bool(ex.answers), ex.is_impossible, report):
      examples.append(dataclasses.replace(ex, answers=kept))
  if not report.questions:
    raise SquadFormatError(f"{source_name} in data_dir={data_dir!r} holds no questions")
  _log_report(source_name, report)
  if not examples:
    raise SquadFormatError(f"{source_name}: no question has a usable answer: {report.summary()}")
  return examples
