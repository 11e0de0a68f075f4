"""SQuAD v1.1 / v2.0 for span question answering: reading, windowed features, logits back to answers.

- `read_squad` reads the official JSON layout (both versions) and checks every answer against its
  context; `read_squad_tfds` reads a prepared TFDS `squad/v1.1` or `squad/v2.0` (array_record, TF-free).
- `make_features` turns examples into fixed-length windows "[CLS] question [SEP] context [SEP]" that
  slide over long contexts by `doc_stride` tokens, as BERT's reference `run_squad.py` does.
- `postprocess` turns per-window start/end logits back into one answer per question, with the exact
  character span in the context.

Answers are located by character offsets throughout (the tokenizer gives each token its characters in
the original text), never by re-tokenizing or detokenizing, so an answer is always a slice of its
context.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# How many problems a ReadReport quotes and how many skipped answers are logged one by one; the
# counts always cover all of them.
MAX_MESSAGES = 20
# Contexts tokenized per call: bounds the memory of the engine's encodings on large splits.
_TOKENIZE_CHUNK = 2048


class SquadFormatError(ValueError):
  """A SQuAD file or record that does not follow the official layout."""


@dataclasses.dataclass
class QAExample:
  """One question about one context. answers: (text, character start in context), all checked."""

  qid: str
  question: str
  context: str
  answers: list[tuple[str, int]]
  is_impossible: bool
  title: str = ""


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
  import tensorflow_datasets as tfds  # heavy; only TFDS sources pay for it

  source_name = f"TFDS {name}[{split}]"
  data_dir = None if data_dir is None else os.fspath(data_dir)
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # TFDS raises several types; all mean the same to the user
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise FileNotFoundError(
      f"cannot open TFDS dataset {name!r} split {split!r} in data_dir={data_dir!r}: {reason} "
      "Prepare it first in array_record format (tfds.data_source reads no other format)"
    ) from e
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


# -------------------------------------------------------------------------------------------------
# Features.


@dataclasses.dataclass
class QAFeatures:
  """Model windows, one row per window; several rows may share an example (example_index).

  input_ids, attention_mask, token_type_ids: (N, L) int32, "[CLS] question [SEP] context [SEP]" padded.
  start_positions, end_positions: (N,) int32 token indexes of the answer, 0 ([CLS]) when the window
    does not hold the whole answer or the question is unanswerable; None unless made for training.
  example_index: (N,) int32, the example each window belongs to.
  offsets: (N, L, 2) int32, (start, end) characters in the example's context for context tokens, -1
    for [CLS], question, [SEP] and padding.
  max_context: (N, L) bool, True where this window gives the token its most context (the reference's
    token_is_max_context); each context token is True in exactly one window.
  """

  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray
  example_index: np.ndarray
  offsets: np.ndarray
  max_context: np.ndarray
  start_positions: np.ndarray | None = None
  end_positions: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.input_ids)

  def model_inputs(self) -> dict[str, np.ndarray]:
    """The arrays a batch holds: the three model inputs, plus the positions when made for training."""
    out = {
      "input_ids": self.input_ids,
      "attention_mask": self.attention_mask,
      "token_type_ids": self.token_type_ids,
    }
    if self.start_positions is not None:
      out |= {"start_positions": self.start_positions, "end_positions": self.end_positions}
    return out


def _tokenize(
  tokenizer, texts: Sequence[str], offsets: bool
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
  """Token ids (and character offsets) of each text without [CLS]/[SEP], never truncated.

  Through the batch call rather than `encode`, whose default truncates to the checkpoint's
  model_max_length (512): a context must be tokenized whole before it is cut into windows.
  """
  ids, offs = [], []
  for i in range(0, len(texts), _TOKENIZE_CHUNK):
    out = tokenizer(
      list(texts[i : i + _TOKENIZE_CHUNK]), padding=False, truncation=False, return_offsets=offsets
    )
    ids += [row[1:-1] for row in out["input_ids"]]
    if offsets:
      offs += [list(row[1:-1]) for row in out["offsets"]]
  return ids, offs


def doc_windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) of each context window, as the reference makes them.

  Each window takes up to max_tokens tokens; the next starts doc_stride tokens later (never further
  than the window reached, so no token is skipped when doc_stride > max_tokens), until one reaches the
  end. An empty context gets one empty window so that every example has a feature.
  """
  windows, start = [], 0
  while True:
    length = min(num_tokens - start, max_tokens)
    windows.append((start, length))
    if start + length >= num_tokens:
      return windows
    start += min(length, doc_stride)


def _max_context_window(num_tokens: int, windows: list[tuple[int, int]]) -> np.ndarray:
  """For each context token, the window where it has the most context (first window on a tie).

  The reference's score: min(tokens left of it, tokens right of it) + 0.01 * window length.
  """
  best = np.full(num_tokens, -1, np.int64)
  best_score = np.full(num_tokens, -np.inf)
  for w, (start, length) in enumerate(windows):
    pos = np.arange(start, start + length)
    score = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
    better = score > best_score[pos]
    best[pos[better]] = w
    best_score[pos[better]] = score[better]
  return best


def _answer_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
  """First and last context tokens whose characters overlap [start, end); None when none does."""
  if not len(offsets):
    return None
  hit = np.flatnonzero((offsets[:, 0] < end) & (offsets[:, 1] > start))
  return (int(hit[0]), int(hit[-1])) if len(hit) else None


def make_features(
  examples: Sequence[QAExample],
  tokenizer,
  *,
  max_seq_length: int = 384,
  doc_stride: int = 128,
  max_query_length: int = 64,
  training: bool,
) -> QAFeatures:
  """Windows "[CLS] question [SEP] context-window [SEP]" over each example, padded to max_seq_length.

  The question keeps its first max_query_length tokens; the context windows advance by doc_stride
  tokens (see doc_windows). Each distinct text is tokenized once. For training, the answer is the
  first one; its tokens are those whose characters overlap [answer_start, answer_start + len(text));
  an answerable example whose answer covers no token (only whitespace or control characters) gets no
  windows (logged). Evaluation gives every example at least one window.
  """
  if doc_stride < 1 or max_query_length < 0:
    raise ValueError(
      f"doc_stride must be >= 1 and max_query_length >= 0, got {doc_stride} and {max_query_length}"
    )
  cls_id, sep_id, pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
  contexts = list(dict.fromkeys(ex.context for ex in examples))
  context_ids, context_offsets = _tokenize(tokenizer, contexts, offsets=True)
  by_context = {
    c: (np.asarray(i, np.int32), np.asarray(o, np.int32).reshape(-1, 2))
    for c, i, o in zip(contexts, context_ids, context_offsets)
  }
  question_ids, _ = _tokenize(tokenizer, [ex.question for ex in examples], offsets=False)

  plans, unlocatable = (
    [],
    [],
  )  # per example: (question ids, context ids, offsets, windows, best, answer tokens)
  for e, ex in enumerate(examples):
    q_ids = question_ids[e][:max_query_length]
    max_tokens = max_seq_length - len(q_ids) - 3
    if max_tokens < 1:
      raise ValueError(
        f"max_seq_length={max_seq_length} leaves no room for context after a {len(q_ids)}-token question "
        f"(max_query_length={max_query_length}) and 3 special tokens"
      )
    c_ids, c_offs = by_context[ex.context]
    answer = None
    if training and not ex.is_impossible:
      if not ex.answers:
        raise ValueError(f"example {e} ({ex.qid!r}) has no answer and is not marked is_impossible")
      text, start = ex.answers[0]
      answer = _answer_tokens(c_offs, start, start + len(text))
      if answer is None:
        unlocatable.append(ex.qid)
        continue
    windows = doc_windows(len(c_ids), max_tokens, doc_stride)
    plans.append((e, q_ids, c_ids, c_offs, windows, _max_context_window(len(c_ids), windows), answer))
  if unlocatable:
    logger.warning(
      "%d training examples have an answer that covers no token and get no windows: %s",
      len(unlocatable),
      unlocatable[:MAX_MESSAGES],
    )

  n = sum(len(p[4]) for p in plans)
  shape = (n, max_seq_length)
  input_ids = np.full(shape, pad_id, np.int32)
  attention_mask = np.zeros(shape, np.int32)
  token_type_ids = np.zeros(shape, np.int32)
  offsets = np.full(shape + (2,), -1, np.int32)
  max_context = np.zeros(shape, bool)
  example_index = np.zeros(n, np.int32)
  start_positions = np.zeros(n, np.int32)
  end_positions = np.zeros(n, np.int32)
  row = 0
  for e, q_ids, c_ids, c_offs, windows, best, answer in plans:
    first = len(q_ids) + 2  # where the context starts in each row
    for w, (start, length) in enumerate(windows):
      stop = first + length
      input_ids[row, 0] = cls_id
      input_ids[row, 1 : first - 1] = q_ids
      input_ids[row, first - 1] = sep_id
      input_ids[row, first:stop] = c_ids[start : start + length]
      input_ids[row, stop] = sep_id
      attention_mask[row, : stop + 1] = 1
      token_type_ids[row, first : stop + 1] = 1
      offsets[row, first:stop] = c_offs[start : start + length]
      max_context[row, first:stop] = best[start : start + length] == w
      example_index[row] = e
      if answer is not None and start <= answer[0] and answer[1] < start + length:
        start_positions[row] = answer[0] - start + first
        end_positions[row] = answer[1] - start + first
      row += 1
  return QAFeatures(
    input_ids=input_ids,
    attention_mask=attention_mask,
    token_type_ids=token_type_ids,
    example_index=example_index,
    offsets=offsets,
    max_context=max_context,
    start_positions=start_positions if training else None,
    end_positions=end_positions if training else None,
  )


# -------------------------------------------------------------------------------------------------
# Post-processing.


@dataclasses.dataclass
class Prediction:
  """The answer to one question.

  text is context[start_char:end_char]; "" with start_char = end_char = -1 for no answer. score is
  the chosen answer's start + end logit (the null score when text is ""). null_score_diff is the null
  score minus the best non-null score (inf when there is no valid span): v2.0 answers "" when it
  exceeds the threshold, and metrics tune the threshold on it. n_best: the best candidates, best
  first, as dicts of text, start_char, end_char, score (v2.0 includes the null answer among them).
  """

  text: str
  start_char: int
  end_char: int
  score: float
  null_score_diff: float
  n_best: list[dict[str, Any]]


def _top(logits: np.ndarray, k: int) -> np.ndarray:
  # Stable on ties (lower index first), so the result does not depend on the sort's internals.
  return np.argsort(-logits, kind="stable")[:k]


def _feature_candidates(
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  offsets: np.ndarray,
  max_context: np.ndarray,
  real: np.ndarray,
  n_best: int,
  max_answer_length: int,
) -> Iterable[tuple[float, int, int]]:
  """(score, start_char, end_char) of every valid span among one window's top start and end tokens
  (ranked among its real tokens: `real` is its attention mask)."""
  tokens = np.flatnonzero(real)
  starts, ends = tokens[_top(start_logits[tokens], n_best)], tokens[_top(end_logits[tokens], n_best)]
  is_context = offsets[:, 0] >= 0
  valid = (
    (is_context[starts] & max_context[starts])[:, None]
    & is_context[ends][None, :]
    & (ends[None, :] >= starts[:, None])
    & (ends[None, :] - starts[:, None] + 1 <= max_answer_length)
  )
  for i, j in zip(*np.nonzero(valid)):
    s, e = starts[i], ends[j]
    yield float(start_logits[s]) + float(end_logits[e]), int(offsets[s, 0]), int(offsets[e, 1])


def postprocess(
  examples: Sequence[QAExample],
  features: QAFeatures,
  start_logits,
  end_logits,
  *,
  n_best: int = 20,
  max_answer_length: int = 30,
  version_2: bool = False,
  null_score_diff_threshold: float = 0.0,
) -> dict[str, Prediction]:
  """Best answer span per question (keyed by qid) from the windows' start and end logits (N, L).

  As the reference: per window, the n_best highest start and end tokens pair into candidates, valid
  when both are context tokens, start <= end, the span has at most max_answer_length tokens and the
  start token has its max context in this window; a span's score is start logit + end logit, and the
  best over all windows of the question wins. The null score is the smallest [CLS] start + end over
  the question's windows; with version_2 the answer is "" when null score - best span score exceeds
  null_score_diff_threshold.

  Unlike the reference, which detokenizes the span's wordpieces and maps them back onto the
  whitespace-split context heuristically, the answer is the exact slice of the context between the
  first token's first character and the last token's last character: accents, case, unicode
  punctuation and inner whitespace come out as written. Candidates are distinct character spans (the
  reference merges equal texts at different places). The n_best tokens are ranked among the window's real
  tokens: the reference ranks its padding too, whose logits (never an answer) can push real candidates out
  of the n_best, so its answers depend on how far a window is padded; here they do not (evaluation and the
  Predictor cut batches to different widths).
  """
  start_logits = np.asarray(start_logits, np.float32)
  end_logits = np.asarray(end_logits, np.float32)
  shape = features.input_ids.shape
  if start_logits.shape != shape or end_logits.shape != shape:
    raise ValueError(
      f"logits have shapes {start_logits.shape} and {end_logits.shape}; the features are {shape} (windows, length)"
    )
  if len(features) and int(features.example_index.max()) >= len(examples):
    raise ValueError(
      f"features refer to example {int(features.example_index.max())} but only {len(examples)} examples were given"
    )
  rows_of: dict[int, list[int]] = {}
  for row, e in enumerate(features.example_index.tolist()):
    rows_of.setdefault(e, []).append(row)

  predictions = {}
  for e, ex in enumerate(examples):
    rows = rows_of.get(e)
    if not rows:
      raise ValueError(
        f"example {e} ({ex.qid!r}) has no feature; were the features made from these examples?"
      )
    null_score = min(float(start_logits[r, 0]) + float(end_logits[r, 0]) for r in rows)
    spans: dict[tuple[int, int], float] = {}
    for r in rows:
      for score, s, t in _feature_candidates(
        start_logits[r],
        end_logits[r],
        features.offsets[r],
        features.max_context[r],
        features.attention_mask[r],
        n_best,
        max_answer_length,
      ):
        if score > spans.get((s, t), -np.inf):
          spans[(s, t)] = score
    ranked = sorted(((score, s, t) for (s, t), score in spans.items()), key=lambda c: (-c[0], c[1], c[2]))
    best = ranked[0] if ranked else None
    diff = null_score - best[0] if best else float("inf")
    if best is None or (version_2 and diff > null_score_diff_threshold):
      chosen = (null_score, -1, -1)
    else:
      chosen = best
    listed = ranked + [(null_score, -1, -1)] if version_2 else ranked
    listed = sorted(listed, key=lambda c: (-c[0], c[1], c[2]))[:n_best]
    predictions[ex.qid] = Prediction(
      text=_slice(ex.context, chosen[1], chosen[2]),
      start_char=chosen[1],
      end_char=chosen[2],
      score=chosen[0],
      null_score_diff=diff,
      n_best=[
        {"text": _slice(ex.context, s, t), "start_char": s, "end_char": t, "score": sc} for sc, s, t in listed
      ],
    )
  return predictions


def _slice(context: str, start: int, end: int) -> str:
  return "" if start < 0 else context[start:end]
