"""A fine-tuning config's data, ready to train on: the task's examples read from TFDS or local files,
their features (fixed-length int32 arrays), the label names, and what evaluation needs to score
predictions in the task's own terms (SQuAD's windows and contexts, tagging's word positions).

Readers and feature conversion live in data/tasks.py (classification, tagging, multiple choice) and
data/squad.py (span QA); this module only routes a config (configs/finetune.py) to them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from bert_jax.data import benchmark_files, squad, tasks
from bert_jax.tokenization import Tokenizer

log = logging.getLogger("bert_jax.finetune")

KINDS = ("classification", "regression", "tagging", "span", "choice")


@dataclasses.dataclass
class EvalSet:
  name: str
  features: dict[str, np.ndarray]
  examples: list  # the examples the features came from (span: QAExample; tagging: TaggedExample)
  qa_features: squad.QAFeatures | None = None  # span only: windows, offsets, example index


@dataclasses.dataclass
class TaskData:
  kind: str
  labels: list[str]  # label names (classification, tagging); empty for regression, span, choice
  train: dict[str, np.ndarray]
  evals: list[EvalSet]
  report: dict[str, Any]  # counts worth a line in the log: truncated words, skipped answers, ...

  @property
  def num_train(self) -> int:
    return len(self.train["input_ids"])


def _limit(items: list, n: int) -> list:
  """At most n items: a fixed random subset in file order (files are often sorted by label, so the
  first n would be one class)."""
  if not n or n >= len(items):
    return items
  keep = np.sort(np.random.default_rng(0).choice(len(items), size=n, replace=False))
  return [items[i] for i in keep]


def split_list(value: str) -> list[str]:
  """A config list field: comma-separated (what the command line can set)."""
  return [p.strip() for p in str(value).split(",") if p.strip()]


def _eval_name(path: str) -> str:
  import os

  name = os.path.basename(path)
  for suffix in (".jsonl", ".json", ".csv", ".tsv", ".txt", ".conll"):
    if name.endswith(suffix):
      return name[: -len(suffix)]
  return name


def _sources(config) -> tuple[Any, list[tuple[str, Any]]]:
  """(train source, [(eval name, eval source)]) where a source is ("tfds", split), ("file", path), or for a
  task's published files (config.data.task_dir) ("glue", GlueFile) or ("conll", path)."""
  d = config.data
  if d.task_dir:
    return _task_dir_sources(config)
  if d.tfds_name:
    evals = split_list(d.eval_splits)
    tasks.check_tfds_splits(
      d.tfds_name,
      d.tfds_data_dir or None,
      {"config.data.train_split": [d.train_split], "config.data.eval_splits": evals},
    )
    return ("tfds", d.train_split), [(split, ("tfds", split)) for split in evals]
  if not d.train:
    raise ValueError(
      "config.data.train is empty and config.data.tfds_name is not set: give training files "
      "(--config.data.train=PATH --config.data.validation=PATH) or a TFDS dataset"
    )
  paths = split_list(d.validation)
  names = [_eval_name(p) for p in paths]
  # Two files with one basename (dev/a.tsv, test/a.tsv) would write the same eval/<name>/ keys.
  names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
  evals = list(zip(names, (("file", p) for p in paths)))
  if not evals:
    raise ValueError("config.data.validation is empty: fine-tuning evaluates on a held-out file every epoch")
  return ("file", d.train), evals


@dataclasses.dataclass(frozen=True)
class GlueFile:
  task: str
  split: str
  path: str

  def __str__(self) -> str:
    return self.path


def _task_dir_sources(config) -> tuple[Any, list[tuple[str, Any]]]:
  """The task's published files in config.data.task_dir, one per split named by train_split / eval_splits: the
  evaluation sets keep the TFDS split names, so metric keys are the same whichever form was read."""
  d, task = config.data, config.task
  benchmark_files.check_task(task)
  if d.train or d.validation:
    raise ValueError(
      f"config.data.task_dir={d.task_dir!r} and config.data.train / validation are both set; give the task's "
      "folder or your own files, not both"
    )
  evals = split_list(d.eval_splits)
  paths = benchmark_files.task_files(
    task, d.task_dir, {"config.data.train_split": [d.train_split], "config.data.eval_splits": evals}
  )

  def source(split: str):
    if task in benchmark_files.GLUE:
      return ("glue", GlueFile(task, split, paths[split]))
    return ("conll" if config.kind == "tagging" else "file", paths[split])

  return source(d.train_split), [(split, source(split)) for split in evals]


def _rows(d, source) -> tuple[list, str]:
  where, value = source
  if where == "tfds":
    return tasks.tfds_rows(d.tfds_name, value, d.tfds_data_dir or None), f"tfds:{d.tfds_name}/{value}"
  if where == "glue":
    return benchmark_files.read_glue(value.path, value.task, value.split), value.path
  file_format = (
    d.format if d.format in tasks.FORMATS else None
  )  # "swag"/"conll" name a layout, not a file type
  return tasks.read_rows(value, file_format, columns=split_list(d.columns) or None), value


def load_task_data(config, tokenizer: Tokenizer) -> TaskData:
  kind = config.kind
  if kind not in KINDS:
    raise ValueError(f"config.kind={kind!r}; expected one of {list(KINDS)}")
  train_source, eval_sources = _sources(config)
  loader = {
    "classification": _classification,
    "regression": _classification,
    "tagging": _tagging,
    "span": _span,
    "choice": _choice,
  }[kind]
  data = loader(config, tokenizer, train_source, eval_sources)
  if not data.num_train:
    raise ValueError(f"{train_source[1]}: no training examples")
  for name, value in data.report.items():
    if value:
      log.warning("%s: %s", name, value)
  return data


# --- classification and regression ----------------------------------------------------------------


def _check_same_labels(labels: list[str], source_names: list[str], source: str) -> None:
  if sorted(labels) != sorted(source_names):
    raise ValueError(
      f"config.data.labels={','.join(labels)!r} are not the labels of {source} ({source_names}): "
      "name the same labels, in the order the model's ids should follow"
    )


def _source_label_names(config) -> tuple[list[str] | None, str]:
  """The label names the data source defines, and the source's name: the task's published files (their values
  as TFDS names, data/benchmark_files.py), a TFDS ClassLabel, or None (local files, regression)."""
  d = config.data
  if config.kind == "regression":
    return None, ""
  if d.task_dir:
    return benchmark_files.GLUE[config.task].names() or None, f"the {config.task} files"
  if d.tfds_name:
    names = tasks.tfds_label_names(d.tfds_name, d.tfds_data_dir or None, d.label_field)
    return names, f"TFDS {d.tfds_name!r}"
  return None, ""


def _ids_to_names(rows, field: str, names: list[str]):
  """TFDS stores a ClassLabel as its index in the builder's order; the task's label order may differ (MNLI's
  reference order is contradiction, entailment, neutral; TFDS's is entailment, neutral, contradiction), so
  labels are matched by name. -1 (no label) stays."""
  for line, row in rows:
    value = row.get(field)
    if isinstance(value, (int, np.integer)) and 0 <= value < len(names):
      row = {**row, field: names[value]}
    yield line, row


def _classification(config, tokenizer, train_source, eval_sources) -> TaskData:
  d, regression = config.data, config.kind == "regression"
  train_rows, train_name = _rows(d, train_source)
  labels = split_list(d.labels)
  source_names, source = _source_label_names(config)
  if not labels and not regression:
    labels = source_names or [str(v) for v in tasks.infer_labels(train_rows, d.label_field)]
  elif labels and source_names:
    _check_same_labels(labels, source_names, source)

  def examples(rows, name):
    if train_source[0] == "tfds" and source_names and labels != source_names:
      rows = _ids_to_names(rows, d.label_field, source_names)
    return tasks.classification_examples(
      rows,
      name,
      text_field=d.text_field,
      pair_field=d.pair_field or None,
      label_field=d.label_field,
      labels=None if regression else labels,
      regression=regression,
    )

  def features(exs, name):
    result = tasks.classification_features(exs, tokenizer, d.max_seq_length)
    truncated = result.pop("truncated", 0)
    if truncated:
      report[f"{name}: examples truncated to max_seq_length={d.max_seq_length}"] = int(truncated)
    return result

  report: dict[str, Any] = {}
  train_examples = examples(train_rows, train_name)
  labelled = [e for e in train_examples if e.label is not None]
  report[f"{train_name}: unlabelled training rows left out"] = len(train_examples) - len(labelled)
  train = features(_limit(labelled, d.max_train_examples), train_name)
  evals = []
  for name, source in eval_sources:
    rows, where = _rows(d, source)
    exs = [e for e in _limit(examples(rows, where), d.max_eval_examples) if e.label is not None]
    if not exs:
      raise ValueError(f"{where}: no labelled examples to evaluate on")
    evals.append(EvalSet(name, features(exs, where), exs))
  return TaskData(config.kind, [] if regression else labels, train, evals, report)


# --- tagging -------------------------------------------------------------------------------------


def _tagged(d, source) -> tuple[list, str]:
  where, value = source
  if where == "conll":
    # The original files are IOB1; converting is a no-op on copies already in IOB2, so either reads.
    scheme = "iob1" if d.tag_scheme in ("iob1", "iob2") else d.tag_scheme
    return tasks.read_conll(value, scheme=scheme), value
  if where == "file" and (d.format == "conll" or (not d.format and value.endswith((".conll", ".txt")))):
    return tasks.read_conll(value, scheme=d.tag_scheme), value
  rows, name = _rows(d, source)
  tag_names = (
    tasks.tfds_label_names(d.tfds_name, d.tfds_data_dir or None, d.tags_field) if where == "tfds" else None
  )
  examples = tasks.tagging_examples(
    rows, name, tokens_field=d.tokens_field, tags_field=d.tags_field, tag_names=tag_names, scheme=d.tag_scheme
  )
  return examples, name


def _tagging(config, tokenizer, train_source, eval_sources) -> TaskData:
  d = config.data
  train_examples, train_name = _tagged(d, train_source)
  if d.document_context:
    tasks.check_documents(train_examples, train_name)
  train_examples = _limit([e for e in train_examples if e.tags is not None], d.max_train_examples)
  eval_examples = []
  for name, source in eval_sources:
    exs, where = _tagged(d, source)
    if d.document_context:
      tasks.check_documents(exs, where)
    eval_examples.append((name, where, [e for e in _limit(exs, d.max_eval_examples) if e.tags is not None]))
  report: dict[str, Any] = {}
  labels = split_list(d.labels)
  if not labels:
    # The tag inventory of every file: a rare tag seen only in evaluation (Brown has 472) is then scored as
    # an error the model makes, rather than stopping the run; its count is logged.
    train_tags = set(tasks.tag_set(train_examples))
    everything = [e for _, _, exs in eval_examples for e in exs] + train_examples
    labels = tasks.tag_set(everything)
    report["tags seen only in evaluation data (never trained)"] = len(set(labels) - train_tags)
  if config.metric == "entity_f1" and not any(t.startswith(("B-", "I-", "E-", "S-")) for t in labels):
    raise ValueError(
      f"config.metric='entity_f1' but the tags {labels[:8]} are not chunk tags (B-X/I-X); "
      "for tags such as POS use --config.metric=token_accuracy --config.best_metric=eval/token_accuracy"
    )
  label_to_id = {t: i for i, t in enumerate(labels)}

  def features(exs, name):
    unknown = sorted({t for e in exs for t in (e.tags or ()) if t not in label_to_id})
    if unknown:
      raise ValueError(f"{name}: tags {unknown[:10]} are not in config.data.labels={labels}")
    result = tasks.tagging_features(exs, tokenizer, d.max_seq_length, label_to_id, d.document_context)
    truncated = result.pop("truncated_words", 0)
    if truncated:
      report[f"{name}: words beyond max_seq_length={d.max_seq_length} (predicted as O)"] = int(truncated)
    return result

  train = features(train_examples, "train")
  train.pop("word_index", None)
  evals = [EvalSet(name, features(exs, where), exs) for name, where, exs in eval_examples]
  return TaskData("tagging", labels, train, evals, report)


# --- span QA -------------------------------------------------------------------------------------


def _squad_examples(d, source) -> tuple[list, str, dict]:
  where, value = source
  if where == "tfds":
    return squad.read_squad_tfds(d.tfds_name, value, d.tfds_data_dir or None), f"tfds:{d.tfds_name}", {}
  examples, report = squad.read_squad(value)
  counts = {
    f"{value}: answers skipped (offset does not match the text)": report.skipped_answers,
    f"{value}: questions dropped (no usable answer)": report.dropped_questions,
  }
  return examples, value, counts


def _qa_arrays(features: squad.QAFeatures, training: bool) -> dict[str, np.ndarray]:
  arrays = {
    "input_ids": features.input_ids,
    "attention_mask": features.attention_mask,
    "token_type_ids": features.token_type_ids,
  }
  if training:
    arrays["start_positions"] = features.start_positions
    arrays["end_positions"] = features.end_positions
  return arrays


def _span(config, tokenizer, train_source, eval_sources) -> TaskData:
  d = config.data
  kwargs = dict(max_seq_length=d.max_seq_length, doc_stride=d.doc_stride, max_query_length=d.max_query_length)
  train_examples, _, report = _squad_examples(d, train_source)
  if not config.squad.version_2:
    impossible = sum(e.is_impossible for e in train_examples)
    if impossible:
      raise ValueError(
        f"{train_source[1]}: {impossible} unanswerable questions (SQuAD 2.0) but config.squad.version_2 is "
        "False; set it to train the no-answer score"
      )
  train_examples = _limit(train_examples, d.max_train_examples)
  train = _qa_arrays(squad.make_features(train_examples, tokenizer, training=True, **kwargs), True)
  evals = []
  for name, source in eval_sources:
    exs, _, counts = _squad_examples(d, source)
    report.update(counts)
    exs = _limit(exs, d.max_eval_examples)
    qa = squad.make_features(exs, tokenizer, training=False, **kwargs)
    evals.append(EvalSet(name, _qa_arrays(qa, False), exs, qa_features=qa))
  return TaskData("span", [], train, evals, report)


# --- multiple choice -----------------------------------------------------------------------------


def _choice(config, tokenizer, train_source, eval_sources) -> TaskData:
  d = config.data

  def examples(source):
    rows, name = _rows(d, source)
    if d.format == "swag" or (not d.choice_endings_field and not d.choice_ending_fields):
      return tasks.swag_examples(rows, name)
    return tasks.choice_examples(
      rows,
      name,
      context_field=d.text_field,
      endings_field=d.choice_endings_field or None,
      ending_fields=split_list(d.choice_ending_fields) or None,
      label_field=d.label_field,
    )

  labelled = [e for e in examples(train_source) if e.label is not None]
  train = tasks.choice_features(_limit(labelled, d.max_train_examples), tokenizer, d.max_seq_length)
  evals = []
  for name, source in eval_sources:
    exs = [e for e in _limit(examples(source), d.max_eval_examples) if e.label is not None]
    evals.append(EvalSet(name, tasks.choice_features(exs, tokenizer, d.max_seq_length), exs))
  return TaskData("choice", [], train, evals, {})
