"""Predictor throughput on real texts, for A/B runs of two checkouts (run it once per checkout, alternating).

    git worktree add /tmp/before HEAD~1
    for root in /tmp/before . /tmp/before .; do
      BERT_JAX_ROOT=$root .venv/bin/python experiments/benchmarks/predictor_ab.py MODEL TEXTS.jsonl 1024
    done

MODEL: a fine-tuned model folder (HuggingFace or bert_jax); TEXTS.jsonl: lines with a "text" field (e.g.
../shared/data/classification/sentiment_movie_rt.jsonl). Prints one JSON line: the checkout, texts per
second and real (non-pad) tokens per second of a second, warm pass over the texts at batch 32, and the
first pass's seconds (compiles included).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.environ.get("BERT_JAX_ROOT", ".")))

from bert_jax.predict import Predictor  # noqa: E402


def main(model: str, texts_path: str, limit: int) -> None:
  with open(texts_path, encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in f][:limit]
  predictor = Predictor.from_pretrained(model)
  start = time.perf_counter()
  predictor.predict(texts, batch_size=32)
  first = time.perf_counter() - start
  start = time.perf_counter()
  out = predictor.predict(texts, batch_size=32)
  warm = time.perf_counter() - start
  real = sum(
    len(predictor.tokenizer.encode(t, max_length=predictor.max_seq_length)["input_ids"]) for t in texts
  )
  record = {
    "checkout": os.environ.get("BERT_JAX_ROOT", "."),
    "texts": len(texts),
    "texts_per_s": round(len(texts) / warm, 1),
    "real_tokens_per_s": round(real / warm),
    "first_pass_s": round(first, 2),
    "labels_head": [row["label"] for row in out[:5]],
  }
  print(json.dumps(record))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1024)
