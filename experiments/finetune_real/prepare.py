"""Fixed train / held-out splits of the real labelled sets in ../shared/data for the fine-tuning experiments.

    python experiments/finetune_real/prepare.py SHARED_DATA_DIR OUT_DIR

- SQuAD v1.1 dev (48 articles): articles 0-35 -> squad_train.json, articles 36-47 -> squad_eval.json, so
  no evaluation question shares an article (or a paragraph) with training.
- People's Daily NER and Brown POS (JSON lines, tokens + tags): 0-based rows with index % 10 == 9 ->
  *_valid.jsonl, the rest -> *_train.jsonl.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bert_jax import files  # noqa: E402

SQUAD_TRAIN_ARTICLES = 36


def split_squad(src: str, out_dir: str, names=("squad_train.json", "squad_eval.json")) -> None:
  """Articles 0-35 to names[0], the rest to names[1], in out_dir."""
  with open(src, encoding="utf-8") as f:
    data = json.load(f)
  articles = data["data"]
  for name, part in zip(names, (articles[:SQUAD_TRAIN_ARTICLES], articles[SQUAD_TRAIN_ARTICLES:])):
    questions = sum(len(p["qas"]) for a in part for p in a["paragraphs"])
    files.write_json(os.path.join(out_dir, name), {"version": data.get("version", "1.1"), "data": part})
    print(f"{os.path.join(out_dir, name)}: {len(part)} articles, {questions} questions")


def split_lines(src: str, out_dir: str, name: str) -> None:
  with open(src, encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  train = [line for i, line in enumerate(lines) if i % 10 != 9]
  valid = [line for i, line in enumerate(lines) if i % 10 == 9]
  for suffix, part in (("train", train), ("valid", valid)):
    files.write_text(os.path.join(out_dir, f"{name}_{suffix}.jsonl"), "".join(part))
    print(f"{name}_{suffix}.jsonl: {len(part)} sentences")


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  shared, out_dir = argv
  os.makedirs(out_dir, exist_ok=True)
  split_squad(os.path.join(shared, "qa", "squad_v1.1_dev.json"), out_dir)
  split_lines(os.path.join(shared, "tagging", "ner_zh_peoples_daily.jsonl"), out_dir, "ner_zh")
  split_lines(os.path.join(shared, "tagging", "pos_en_brown.jsonl"), out_dir, "pos_brown")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
