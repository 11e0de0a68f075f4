"""The benchmarks' files under their published names: finding a task's files in one folder
(config.data.task_dir) and reading GLUE's TSVs, so that a task sees the same fields, label names and split
names from its files as from its TFDS dataset.

The layouts: GLUE's folders as the GLUE download script writes them (CoLA/, SST-2/, MRPC/, QQP/, STS-B/, MNLI/,
QNLI/, RTE/, WNLI/, diagnostic/), SQuAD's train-v1.1.json / dev-v1.1.json (v2.0 likewise), the CoNLL-2003 files
(eng.train, eng.testa, eng.testb, or the common train.txt, valid.txt, test.txt) and SWAG's train.csv / val.csv.
SQuAD, CoNLL and SWAG files are read by their own readers (squad.py, tagging.py, multiple_choice.py); GLUE's are
read here.

GLUE TSVs are read as the reference reads them (run_classifier.py's `_read_tsv`: tab-separated, quoting off), so a
stray quote in an MNLI or QQP sentence is text, never the start of a field that swallows the lines after it. Each
row carries TFDS's field names (premise/hypothesis for MNLI, sentence1/sentence2, question1/question2, ...) and
the label as TFDS's ClassLabel name ("1" in SST-2's file is "positive"), so a model trained on either source has
the same labels in the same order; test files give label -1 (unlabelled) and their own index as `idx`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence

from bert_jax.data.task_rows import MISSING_LABEL, Row, TaskDataError


@dataclasses.dataclass(frozen=True)
class GlueLayout:
  """One GLUE task's files: folder, file per split, and which column holds each TFDS field."""

  folder: str  # as the GLUE download script names it
  files: Mapping[str, str]  # TFDS split name -> file name
  fields: Mapping[str, str]  # TFDS field -> the file's column (text first, then the pair)
  label: str | None  # the labelled files' label column (None: a test-only set)
  # The file's label values -> TFDS's ClassLabel names, in the reference's id order (run_classifier.py's
  # get_labels(): "0", "1" for the binary tasks); None: a float score (STS-B).
  label_names: Mapping[str, str] | None
  headerless: tuple[str, ...] = ()  # the columns of labelled files that have no header row (CoLA's)
  index: str = "index"  # the test files' index column

  def names(self) -> list[str]:
    return [] if self.label_names is None else list(self.label_names.values())


_GLUE_SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_PAIR = {"sentence1": "sentence1", "sentence2": "sentence2"}
_NLI = {"entailment": "entailment", "not_entailment": "not_entailment"}

GLUE: dict[str, GlueLayout] = {
  # CoLA's train/dev: source, label, the author's mark ("*" for unacceptable), sentence; its test has a header.
  "cola": GlueLayout(
    "CoLA",
    _GLUE_SPLITS,
    {"sentence": "sentence"},
    "label",
    {"0": "unacceptable", "1": "acceptable"},
    headerless=("source", "label", "author_label", "sentence"),
  ),
  "sst2": GlueLayout(
    "SST-2", _GLUE_SPLITS, {"sentence": "sentence"}, "label", {"0": "negative", "1": "positive"}
  ),
  "mrpc": GlueLayout(
    "MRPC",
    _GLUE_SPLITS,
    {"sentence1": "#1 String", "sentence2": "#2 String"},
    "Quality",
    {"0": "not_equivalent", "1": "equivalent"},
  ),
  "qqp": GlueLayout(
    "QQP",
    _GLUE_SPLITS,
    {"question1": "question1", "question2": "question2"},
    "is_duplicate",
    {"0": "not_duplicate", "1": "duplicate"},
    index="id",
  ),
  "stsb": GlueLayout("STS-B", _GLUE_SPLITS, _PAIR, "score", None),
  "mnli": GlueLayout(
    "MNLI",
    {
      "train": "train.tsv",
      "validation_matched": "dev_matched.tsv",
      "validation_mismatched": "dev_mismatched.tsv",
      "test_matched": "test_matched.tsv",
      "test_mismatched": "test_mismatched.tsv",
    },
    {"premise": "sentence1", "hypothesis": "sentence2"},
    "gold_label",
    {"contradiction": "contradiction", "entailment": "entailment", "neutral": "neutral"},
  ),
  "qnli": GlueLayout("QNLI", _GLUE_SPLITS, {"question": "question", "sentence": "sentence"}, "label", _NLI),
  "rte": GlueLayout("RTE", _GLUE_SPLITS, _PAIR, "label", _NLI),
  "wnli": GlueLayout("WNLI", _GLUE_SPLITS, _PAIR, "label", {"0": "not_entailment", "1": "entailment"}),
  # The diagnostic set (TFDS glue/ax): a test set only, scored by an MNLI model.
  "ax": GlueLayout(
    "diagnostic", {"test": "diagnostic.tsv"}, {"premise": "sentence1", "hypothesis": "sentence2"}, None, None
  ),
}

# task -> TFDS split name -> the file names it may have (the first is the one error messages name).
FILES: dict[str, dict[str, tuple[str, ...]]] = {
  **{task: {split: (name,) for split, name in layout.files.items()} for task, layout in GLUE.items()},
  "squad1": {"train": ("train-v1.1.json",), "validation": ("dev-v1.1.json",)},
  "squad2": {"train": ("train-v2.0.json",), "validation": ("dev-v2.0.json",)},
  # The original CoNLL-2003 English files, and the names of the common copies (Hugging Face's download).
  "conll2003": {
    "train": ("eng.train", "train.txt"),
    "dev": ("eng.testa", "valid.txt"),
    "test": ("eng.testb", "test.txt"),
  },
  "swag": {"train": ("train.csv",), "validation": ("val.csv",), "test": ("test.csv",)},
}
TASKS = tuple(sorted(FILES))


def check_task(task: str) -> None:
  if task not in FILES:
    raise TaskDataError(
      f"config.data.task_dir is set, but task {task!r} has no known file layout; the tasks with one are "
      f"{list(TASKS)}. For other files name them with config.data.train and config.data.validation"
    )


def _listing(folder: str, limit: int = 20) -> str:
  names = sorted(os.listdir(folder))
  return repr(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def task_folder(task: str, task_dir: str | os.PathLike) -> str:
  """The folder holding the task's files: for GLUE, the task's folder under a GLUE root (MNLI/ in glue_data/)
  or task_dir itself when it holds the task's files; for the others task_dir."""
  check_task(task)
  task_dir = os.fspath(task_dir)
  if not os.path.isdir(task_dir):
    raise FileNotFoundError(f"config.data.task_dir={task_dir!r} is not a folder")
  if task not in GLUE:
    return task_dir
  folder = GLUE[task].folder
  for name in sorted(os.listdir(task_dir)):  # GLUE/MNLI, or a copy with lower-case names (glue/mnli)
    if name.lower() == folder.lower() and os.path.isdir(os.path.join(task_dir, name)):
      return os.path.join(task_dir, name)
  if any(os.path.isfile(os.path.join(task_dir, f)) for names in FILES[task].values() for f in names):
    return task_dir
  expected = os.path.join(task_dir, folder, next(iter(GLUE[task].files.values())))
  raise FileNotFoundError(
    f"config.data.task_dir={task_dir!r}: no GLUE folder {folder!r} for task {task!r} (expected {expected}, "
    f"as the GLUE download script writes it) and no {task} files in the folder itself; it holds "
    f"{_listing(task_dir)}"
  )


def task_files(
  task: str, task_dir: str | os.PathLike, requested: Mapping[str, Sequence[str]]
) -> dict[str, str]:
  """split -> path of the task's file for every split a config field asks for (field -> splits, as
  {"config.data.eval_splits": ["validation"]}); errors name the field, the path expected and what is there."""
  folder = task_folder(task, task_dir)
  known = FILES[task]
  paths = {}
  for field, splits in requested.items():
    for split in splits:
      if split not in known:
        raise TaskDataError(
          f"{field}={split!r}: the {task} files have no split {split!r}; their splits are {sorted(known)} "
          "(TFDS split expressions such as train[:10%] are not read from files: use "
          "config.data.max_train_examples / max_eval_examples)"
        )
      candidates = [os.path.join(folder, name) for name in known[split]]
      found = [p for p in candidates if os.path.isfile(p)]
      if not found:
        raise FileNotFoundError(
          f"{field}={split!r}: expected the {task} file {' or '.join(candidates)}; {folder} holds "
          f"{_listing(folder)}"
        )
      paths[split] = found[0]
  return paths


# --- reading GLUE's TSVs --------------------------------------------------------------------------


def _header_problem(header: list[str], needed: list[str]) -> str | None:
  missing = [c for c in needed if c not in header]
  return f"the header lacks the columns {missing}" if missing else None


def read_glue(path: str | os.PathLike, task: str, split: str) -> list[Row]:
  """The rows of one GLUE file as (line, row): TFDS's field names, the label as TFDS's name (STS-B: the score's
  text; test files: -1) and `idx` (the test files' own index, else the row's position). A row with the wrong
  number of fields, a header without the layout's columns or bad UTF-8 raise TaskDataError naming the line."""
  if task not in GLUE:
    raise TaskDataError(f"no GLUE file layout for task {task!r}; known: {sorted(GLUE)}")
  layout, path = GLUE[task], os.fspath(path)
  labelled = not split.startswith("test") and layout.label is not None
  header = list(layout.headerless) if labelled and layout.headerless else None
  needed = list(layout.fields.values()) + ([layout.label] if labelled else [layout.index])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GLUE file {path!r} does not exist")
  rows: list[Row] = []
  # utf-8-sig: MRPC's files begin with the byte-order mark of Microsoft's release.
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
      for record in reader:
        line = reader.line_num
        if not record:
          continue
        if header is None:
          header = record
          problem = _header_problem(header, needed)
          if problem:
            raise TaskDataError(
              f"{path} line {line}: {problem}; expected {task}'s {split} file with the columns {needed} "
              f"(found {header})"
            )
          continue
        if len(record) != len(header):
          raise TaskDataError(
            f"{path} line {line}: {len(record)} tab-separated fields; expected {len(header)}, the columns "
            f"{header} (GLUE files are read with quoting off: a quote is part of the text)"
          )
        rows.append((line, _glue_row(layout, dict(zip(header, record)), labelled, len(rows))))
    except UnicodeDecodeError as e:
      raise TaskDataError(
        f"{path} line {reader.line_num + 1}: byte 0x{e.object[e.start]:02x} is not UTF-8; expected UTF-8 text"
      ) from None
    except csv.Error as e:
      raise TaskDataError(f"{path} line {reader.line_num}: cannot parse the TSV ({e})") from None
  if not rows:
    raise TaskDataError(f"{path} has no data rows; expected {task}'s {split} file")
  return rows


def _glue_row(layout: GlueLayout, record: dict[str, str], labelled: bool, position: int) -> dict:
  row: dict = {field: record[column] for field, column in layout.fields.items()}
  if labelled:
    value = record[layout.label]
    # A value outside the layout stays as it is: classification_examples names it, the file and the line.
    row["label"] = value if layout.label_names is None else layout.label_names.get(value, value)
    row["idx"] = position
  else:
    row["label"] = MISSING_LABEL
    index = record[layout.index]
    row["idx"] = int(index) if index.isdigit() else index
  return row
