"""Tokenizes text lines with a BERT vocabulary: one JSON object per input line on stdout.

    python -m bert_jax.tokenize --vocab VOCAB [--cased] [--max-length N] FILE|-

VOCAB is a vocab.txt (lower-cased unless --cased) or a checkpoint folder (whose tokenizer config
sets the casing). Each output line is {"tokens": [...], "ids": [...]}, [CLS] and [SEP] included.
Only the newline ending an input line is removed; the rest of the line is text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator

from bert_jax import hub
from bert_jax.tokenization import Tokenizer

_BATCH = 1000  # lines per engine call: enough for the engine's threads, few enough to stream


class _BadLine(Exception):
  pass


def _read_lines(path: str) -> Iterator[str]:
  name = "<stdin>" if path == "-" else path
  stream = sys.stdin.buffer if path == "-" else open(path, "rb")
  try:
    # Binary lines end at b"\n" only; text mode would also end them at \r, \x0c, \x85 or U+2028.
    for lineno, raw in enumerate(stream, 1):
      raw = raw[:-1] if raw.endswith(b"\n") else raw
      try:
        yield raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise _BadLine(
          f"{name} line {lineno} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte "
          f"{e.start + 1} of the line)"
        ) from None
  finally:
    if stream is not sys.stdin.buffer:
      stream.close()


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.tokenize", description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--vocab",
    required=True,
    help="a vocab.txt, a folder with vocab.txt / tokenizer.json, or hf://ORG/NAME (a Hub model's tokenizer)",
  )
  parser.add_argument("--cased", action="store_true", help="keep case and accents (for a vocab.txt)")
  parser.add_argument(
    "--max-length", type=int, default=None, help="truncate to N tokens, [CLS]/[SEP] included"
  )
  parser.add_argument("file", help="a UTF-8 text file, or - for stdin")
  args = parser.parse_args(argv)
  if args.max_length is not None and args.max_length < 2:
    parser.error("--max-length must be at least 2 ([CLS] and [SEP])")
  if args.file != "-" and not os.path.isfile(args.file):
    parser.exit(1, f"error: input file {args.file!r} does not exist\n")
  folder = os.path.isdir(args.vocab) or hub.is_hub(args.vocab)
  if folder and args.cased:
    parser.error("--cased applies to a vocab.txt; a folder's tokenizer config sets the casing")
  try:
    if folder:
      tokenizer = Tokenizer.from_pretrained(args.vocab)
    else:
      tokenizer = Tokenizer.from_vocab(args.vocab, lowercase=not args.cased)
  except (ValueError, FileNotFoundError) as e:
    parser.exit(1, f"error: {e}\n")

  out = sys.stdout.buffer
  batch: list[str] = []

  def flush() -> None:
    encoded = tokenizer(batch, max_length=args.max_length, padding=False)
    for ids in encoded["input_ids"]:
      record = {"tokens": tokenizer.convert_ids_to_tokens(ids), "ids": ids}
      out.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
    batch.clear()

  try:
    try:
      for line in _read_lines(args.file):
        batch.append(line)
        if len(batch) == _BATCH:
          flush()
    finally:
      flush()  # every line before a bad one still comes out
      out.flush()
  except _BadLine as e:
    parser.exit(1, f"error: {e}\n")
  except BrokenPipeError:
    # The reader left (`| head`): not an error. Point stdout at /dev/null so exit does not complain.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
  main()
