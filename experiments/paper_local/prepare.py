"""The paper-table commands' data forms, made from ../shared/data for runs on this project's CPU machines.

    python experiments/paper_local/prepare.py SHARED_DATA_DIR OUT_DIR

- OUT/squad1/train-v1.1.json and dev-v1.1.json: the SQuAD v1.1 dev set (48 articles) split by articles, 0-35 to
  train and 36-47 to evaluate (no evaluation question shares an article or a paragraph with training), under the
  file names the SQuAD table reads.
- OUT/glue/MNLI/train.tsv, dev_matched.tsv, dev_mismatched.tsv: VitaminC fact verification (claim, evidence,
  True / False / Neither) written as GLUE's MNLI files: the header and columns of the GLUE download script's MNLI
  (premise = evidence in column 8, hypothesis = claim in column 9, gold label last), labels entailment /
  contradiction / neutral. Rows are split by the Wikipedia page their evidence comes from (a seeded hash of the
  title before ": "): 90% train, the rest halved into "matched" and "mismatched" by the same hash. It is not
  MNLI: it exercises the GLUE-format path on real pairs with three classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bert_jax import files  # noqa: E402
from experiments.finetune_real.prepare import split_squad  # noqa: E402  (the same article split)

LABELS = {"True": "entailment", "False": "contradiction", "Neither": "neutral"}
TRAIN_HEADER = (
  "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse "
  "sentence1 sentence2 label1 gold_label"
).split()
DEV_HEADER = TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def _bucket(title: str) -> int:
  return int.from_bytes(hashlib.sha256(f"vitaminc:{title}".encode()).digest()[:4], "little") % 20


def _clean(text: str) -> str:
  return " ".join(text.replace("\t", " ").split())


def vitaminc_as_mnli(src: str, out_dir: str) -> None:
  parts = {"train.tsv": [], "dev_matched.tsv": [], "dev_mismatched.tsv": []}
  with open(src, encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      row = json.loads(line)
      bucket = _bucket(row["evidence"].split(": ", 1)[0])
      name = "train.tsv" if bucket < 18 else ("dev_matched.tsv" if bucket == 18 else "dev_mismatched.tsv")
      parts[name].append(row)
  for name, rows in parts.items():
    header = TRAIN_HEADER if name == "train.tsv" else DEV_HEADER
    lines = ["\t".join(header)]
    for i, row in enumerate(rows):
      premise, hypothesis, label = _clean(row["evidence"]), _clean(row["claim"]), LABELS[row["label"]]
      parses = [premise, hypothesis, premise, hypothesis]
      labels = [label] * (len(header) - 10)  # label1 (.. label5) and gold_label
      lines.append("\t".join([str(i), str(i), f"{i}v", "vitaminc", *parses, premise, hypothesis, *labels]))
    files.write_text(os.path.join(out_dir, "glue", "MNLI", name), "\n".join(lines) + "\n")
    print(f"glue/MNLI/{name}: {len(rows)} pairs")


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  shared, out_dir = argv
  split_squad(
    os.path.join(shared, "qa", "squad_v1.1_dev.json"),
    os.path.join(out_dir, "squad1"),
    ("train-v1.1.json", "dev-v1.1.json"),
  )
  vitaminc_as_mnli(os.path.join(shared, "pairs", "vitaminc.jsonl"), out_dir)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
