"""GLUE test-set submissions: predictions in the file names, columns and label values the GLUE server reads.

    python -m bert_jax.predict --model runs/mnli/export test_matched.jsonl > mnli_m.jsonl
    python -m bert_jax.glue --task mnli_matched --predictions mnli_m.jsonl --out submission/MNLI-m.tsv
    python -m bert_jax.glue --task wnli --majority not_entailment --count 146 --out submission/WNLI.tsv
    python -m bert_jax.glue --task mnli_matched --model runs/mnli/export --test GLUE/MNLI/test_matched.tsv \
        --out submission/MNLI-m.tsv

With --model and --test the exported model's Predictor runs on the GLUE test file itself, read as the runner reads
GLUE's files (data/benchmark_files.py), and each row keeps the test file's own index.
Each file is `index<TAB>prediction`, one row per test example in the test file's order. The server reads names
for MNLI, QNLI, RTE and the diagnostic set (entailment, neutral, contradiction, not_entailment) and 0/1 for the
binary tasks (1 = acceptable, positive, equivalent, duplicate, entailment); STS-B takes the score. A model's labels
are mapped by name, whichever source named them (TFDS's names or the GLUE files' own 0/1 and names). WNLI: the
BERT paper submitted the majority class ("we predict the majority class" for it), which `--majority` writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence

from bert_jax import files

# task -> (submission file, the server's label values in the reference's id order, or None for a score)
TASKS: dict[str, tuple[str, tuple[str, ...] | None]] = {
  "cola": ("CoLA.tsv", ("0", "1")),
  "sst2": ("SST-2.tsv", ("0", "1")),
  "mrpc": ("MRPC.tsv", ("0", "1")),
  "qqp": ("QQP.tsv", ("0", "1")),
  "stsb": ("STS-B.tsv", None),
  "mnli_matched": ("MNLI-m.tsv", ("contradiction", "entailment", "neutral")),
  "mnli_mismatched": ("MNLI-mm.tsv", ("contradiction", "entailment", "neutral")),
  "ax": ("AX.tsv", ("contradiction", "entailment", "neutral")),
  "qnli": ("QNLI.tsv", ("entailment", "not_entailment")),
  "rte": ("RTE.tsv", ("entailment", "not_entailment")),
  "wnli": ("WNLI.tsv", ("0", "1")),
}

# The names a model's labels may carry for each server value (TFDS's ClassLabel names, the GLUE files' values).
_SYNONYMS = {
  "cola": {"0": ("0", "unacceptable"), "1": ("1", "acceptable")},
  "sst2": {"0": ("0", "negative"), "1": ("1", "positive")},
  "mrpc": {"0": ("0", "not_equivalent"), "1": ("1", "equivalent")},
  "qqp": {"0": ("0", "not_duplicate"), "1": ("1", "duplicate")},
  "wnli": {"0": ("0", "not_entailment"), "1": ("1", "entailment")},
}


def server_value(task: str, label: str | int | float) -> str:
  """The value the GLUE server reads for one predicted label (a name) or score."""
  if task not in TASKS:
    raise ValueError(f"GLUE task {task!r}; known: {sorted(TASKS)}")
  _, values = TASKS[task]
  if values is None:
    if isinstance(label, str):
      raise ValueError(f"{task}: predictions are scores; got the label {label!r}")
    return f"{float(label):.6g}"
  name = str(label)
  for value, names in _SYNONYMS.get(task, {v: (v,) for v in values}).items():
    if name in names:
      return value
  raise ValueError(
    f"{task}: the predicted label {name!r} is none of the server's {list(values)} (or their names)"
  )


def write_submission(
  task: str, predictions: Sequence[str | int | float], path: str, indices: Sequence[int | str] | None = None
) -> None:
  """`index<TAB>prediction` rows in order, written atomically; indices: the test file's own (default 0, 1, ...)."""
  if task not in TASKS:
    raise ValueError(f"GLUE task {task!r}; known: {sorted(TASKS)}")
  if indices is None:
    indices = range(len(predictions))
  elif len(indices) != len(predictions):
    raise ValueError(f"{len(predictions)} predictions for {len(indices)} test rows; expected one per row")
  rows = ["index\tprediction"] + [f"{i}\t{server_value(task, p)}" for i, p in zip(indices, predictions)]
  files.write_text(path, "\n".join(rows) + "\n")


def read_predictions(lines: Iterable[str], source: str) -> list[str | float]:
  """The label (or score) of each line of the predict CLI's JSON-lines output."""
  out = []
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{source}:{number}: not a JSON line of the predict CLI ({e})") from None
    if "label" in record:
      out.append(record["label"])
    elif "score" in record:
      out.append(record["score"])
    else:
      raise ValueError(f"{source}:{number}: no 'label' or 'score' field; expected the predict CLI's output")
  return out


# submission task -> (the file layout's task, the TFDS split its test file is)
_TEST_FILES = {"mnli_matched": ("mnli", "test_matched"), "mnli_mismatched": ("mnli", "test_mismatched")}


def predict_test_file(task: str, model: str, test_file: str, batch_size: int = 32) -> tuple[list, list]:
  """(indices, predictions) of the exported model's Predictor on a GLUE test file, one per row in its order."""
  from bert_jax.data import benchmark_files
  from bert_jax.predictor import Predictor

  layout_task, split = _TEST_FILES.get(task, (task, "test"))
  rows = benchmark_files.read_glue(test_file, layout_task, split)
  fields = list(benchmark_files.GLUE[layout_task].fields)
  predictor = Predictor.from_pretrained(model)
  want = "classification" if TASKS[task][1] is not None else "regression"
  if predictor.kind != want:
    raise ValueError(f"{model} is a {predictor.kind} model; {task} needs a {want} model")
  texts = [row[fields[0]] for _, row in rows]
  pairs = [row[fields[1]] for _, row in rows] if len(fields) > 1 else None
  outputs = predictor.predict(texts, pairs, batch_size=batch_size)
  predictions = [out["score"] if want == "regression" else out["label"] for out in outputs]
  return [row["idx"] for _, row in rows], predictions


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", required=True, choices=sorted(TASKS))
  parser.add_argument("--predictions", help="the predict CLI's JSON lines for the task's test file, in order")
  parser.add_argument("--majority", help="write this label for every example (WNLI, as the BERT paper did)")
  parser.add_argument("--count", type=int, help="with --majority and no --predictions: the test set's size")
  parser.add_argument("--model", help="an exported fine-tuned model (WORKDIR/export) to run on --test")
  parser.add_argument(
    "--test", help="the task's GLUE test file, e.g. GLUE/MNLI/test_matched.tsv (with --model)"
  )
  parser.add_argument("--batch-size", type=int, default=32, help="with --model: examples per forward pass")
  parser.add_argument("--out", required=True, help=f"the submission file, e.g. submission/{TASKS['wnli'][0]}")
  args = parser.parse_args(argv)
  try:
    predictions: list = []
    indices = None
    if bool(args.model) != bool(args.test):
      raise ValueError("--model and --test go together: the exported model and the task's GLUE test file")
    if args.model:
      if args.predictions or args.majority is not None:
        raise ValueError("give --model with --test, or --predictions, or --majority; not several")
      indices, predictions = predict_test_file(args.task, args.model, args.test, args.batch_size)
    elif args.predictions:
      with open(args.predictions, encoding="utf-8") as f:
        predictions = read_predictions(f, args.predictions)
    if args.majority is not None:
      count = len(predictions) if args.predictions else args.count
      if not count:
        raise ValueError("--majority needs --predictions (for the count) or --count N")
      predictions = [args.majority] * count
    elif not args.predictions and not args.model:
      raise ValueError("give --model DIR --test FILE, --predictions FILE, or --majority LABEL --count N")
    write_submission(args.task, predictions, args.out, indices)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{args.out}: {len(predictions)} predictions for {args.task}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
