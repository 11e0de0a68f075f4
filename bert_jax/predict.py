"""Inference CLI: one JSON object per input line.

    python -m bert_jax.predict --model PATH [--pooling cls|mean|max] FILE|-

Each input line is a text, or a JSON object {"text": ..., "pair": ...} when it starts with "{".
Each output line is {"text": ..., "embedding": [...]} with the pooled embedding.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Iterable, Iterator


def read_examples(lines: Iterable[str], source: str) -> Iterator[tuple[str, str | None]]:
  for number, line in enumerate(lines, 1):
    line = line.rstrip("\n")
    if line.startswith("{"):
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{source}:{number}: line starts with '{{' but is not valid JSON ({e})") from None
      if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise ValueError(f'{source}:{number}: expected a JSON object with a string "text" field')
      yield obj["text"], obj.get("pair")
    else:
      yield line, None


def _chunks(items: Iterator, size: int) -> Iterator[list]:
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m bert_jax.predict",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--model", required=True, help="checkpoint folder (HuggingFace, Google or bert_jax)")
  parser.add_argument(
    "--pooling",
    choices=("cls", "mean", "max"),
    default=None,
    help="default: the checkpoint's (BERT's [CLS] pooler for HF/Google folders)",
  )
  parser.add_argument("--max-length", type=int, default=None)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("input", help="a text file, or - for standard input")
  args = parser.parse_args(argv)

  from bert_jax.pretrained import from_pretrained

  try:
    bert = from_pretrained(args.model, pooling=args.pooling)
    stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  source = "<stdin>" if args.input == "-" else args.input
  try:
    with stream:
      for chunk in _chunks(read_examples(stream, source), 8 * args.batch_size):
        texts = [t for t, _ in chunk]
        pairs = [p for _, p in chunk]
        has_pairs = any(p is not None for p in pairs)
        if has_pairs and not all(p is not None for p in pairs):
          # Pairs and singles in one batch would need two encodes; keep each line's own meaning.
          results = [
            bert.encode([t], [p] if p is not None else None, max_length=args.max_length, batch_size=1)[
              "pooler_output"
            ][0]
            for t, p in chunk
          ]
        else:
          results = bert.encode(
            texts, pairs if has_pairs else None, max_length=args.max_length, batch_size=args.batch_size
          )["pooler_output"]
        for (text, pair), vector in zip(chunk, results):
          record = {"text": text, "embedding": [round(float(v), 7) for v in vector]}
          if pair is not None:
            record["pair"] = pair
          sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
  except UnicodeDecodeError as e:
    print(f"error: {source}: not UTF-8 text ({e})", file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
