"""Splits the Rotten Tomatoes sentence set into the fixed train / validation files that both sides of the
fine-tuning comparison (bert_jax and transformers + PyTorch) read, so that they see the same examples.

    python experiments/finetune_sentiment/prepare.py SRC.jsonl OUT_DIR

The split is by position, not random: source line i (0-based) goes to validation when i % 10 == 9, else to
train. A fixed rule needs no seed and gives the same split to anyone with the same source file.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

from bert_jax import files

VALIDATION_EVERY = 10
VALIDATION_REMAINDER = 9


def read_rows(path: str) -> list[dict]:
  """Rows {"text", "label"[, "score"]} of a JSON-lines file; anything else raises, naming file and line."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      where = f"{path}:{number}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg}); expected one JSON object per line") from None
      rows.append(check_row(record, where))
  if not rows:
    raise ValueError(f"{path}: no rows; expected JSON lines with 'text' and 'label'")
  return rows


def check_row(record, where: str) -> dict:
  if not isinstance(record, dict):
    raise TypeError(f"{where}: got {type(record).__name__}, expected a JSON object with 'text' and 'label'")
  for field in ("text", "label"):
    if field not in record:
      raise ValueError(f"{where}: missing field {field!r}; the row has {sorted(record)}")
    value = record[field]
    if not isinstance(value, str) or not value.strip():
      raise ValueError(f"{where}: field {field!r} is {value!r}; expected a non-empty string")
  row = {"text": record["text"], "label": record["label"]}
  if "score" in record:
    score = record["score"]
    # bool is an int subclass in Python; a true/false score is a data error, not a number.
    if isinstance(score, bool) or not isinstance(score, (int, float)):
      raise ValueError(f"{where}: field 'score' is {score!r}; expected a number")
    row["score"] = score
  return row


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
  train, validation = [], []
  for index, row in enumerate(rows):
    (validation if index % VALIDATION_EVERY == VALIDATION_REMAINDER else train).append(row)
  return train, validation


def write_jsonl(path: str, rows: list[dict]) -> None:
  with files.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def balance(rows: list[dict]) -> str:
  counts = collections.Counter(row["label"] for row in rows)
  return ", ".join(f"{label} {n} ({n / len(rows):.1%})" for label, n in sorted(counts.items()))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("source", help="JSON lines with 'text' and 'label' (and optionally 'score')")
  parser.add_argument("out_dir", help="folder for train.jsonl and validation.jsonl")
  args = parser.parse_args(argv)
  rows = read_rows(args.source)
  train, validation = split(rows)
  if not train or not validation:
    raise ValueError(
      f"{args.source}: {len(rows)} rows give {len(train)} train and {len(validation)} validation rows; "
      f"expected at least {VALIDATION_EVERY} rows so that both parts are non-empty"
    )
  os.makedirs(args.out_dir, exist_ok=True)
  for name, part in (("train", train), ("validation", validation)):
    path = os.path.join(args.out_dir, f"{name}.jsonl")
    write_jsonl(path, part)
    print(f"{path}: {len(part)} rows; {balance(part)}")


if __name__ == "__main__":
  sys.exit(main())
