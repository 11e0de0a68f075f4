"""bert_jax's exact WordPiece `Tokenizer` against the `tokenizers` engine's stock `BertWordPieceTokenizer`,
ids only, on the same lines in one process, interleaved by round (bert_jax, stock, bert_jax, stock, ...).

Both are built from the same vocab.txt, uncased (the stock one with its defaults: clean_text, CJK split,
accents stripped when lower-casing), so neither pads nor truncates; MiniLM's tokenizer.json would pad and
truncate to 128. Both take the same batches of lines (`--batch`, the data builder's 1000 by default):
bert_jax as the pretraining data build calls it, `tokenizer(batch, padding=False, truncation=False)
["input_ids"]`; the stock one as its users do, `[e.ids for e in tok.encode_batch(batch)]`. Every round
asserts identical ids on every line. Lines are the file's non-blank lines; MB/s counts their UTF-8 bytes.
`--stock-fast` adds a third side: the stock pipeline through the engine's `encode_batch_fast` (no offset
tracking), which its wrapper class does not offer but bert_jax's ids path uses. `--full-path` adds bert_jax
as it was before its fast paths: every line through the full pipeline, with offsets.

  .venv/bin/python experiments/benchmarks/tokenizer_bench.py                       # Wikipedia leads
  .venv/bin/python experiments/benchmarks/tokenizer_bench.py ../shared/data/text/en_sotu.txt --rounds 4
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tokenizers

from bert_jax.embed import bundled_minilm_path
from bert_jax.tokenization import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TEXT = os.path.join(REPO, "..", "shared", "data", "text", "en_wiki_vital_summaries.txt")

Encoder = Callable[[list[str]], list[list[int]]]


def read_lines(path: str) -> list[str]:
  # Split on "\n" only: str.splitlines() would also split inside lines at \x0c, \x85 and U+2028.
  with open(path, encoding="utf-8", newline="") as f:
    return [line for line in f.read().split("\n") if line.strip()]


def encoders(vocab: str, stock_fast: bool, full_path: bool) -> dict[str, Encoder]:
  ours = Tokenizer.from_vocab(vocab, lowercase=True)
  stock = tokenizers.BertWordPieceTokenizer(vocab, lowercase=True)
  assert stock._tokenizer.padding is None and stock._tokenizer.truncation is None
  sides: dict[str, Encoder] = {
    "bert_jax": lambda batch: ours(batch, padding=False, truncation=False)["input_ids"],
    "stock": lambda batch: [e.ids for e in stock.encode_batch(batch)],
  }
  if full_path:
    sides["bert_jax_full"] = lambda batch: [
      e.ids for e in ours._encode_many([ours._prepare(t) for t in batch], True, plain_path=False)
    ]
  if stock_fast:
    sides["stock_fast"] = lambda batch: [e.ids for e in stock._tokenizer.encode_batch_fast(batch)]
  return sides


def timed_pass(encode: Encoder, batches: list[list[str]]) -> tuple[float, list[list[int]]]:
  start = time.perf_counter()
  ids = [row for batch in batches for row in encode(batch)]
  return time.perf_counter() - start, ids


def check_same(name: str, ids: list[list[int]], expected: list[list[int]], lines: list[str]) -> None:
  if ids != expected:
    i = next(i for i, (a, b) in enumerate(zip(ids, expected)) if a != b)
    raise AssertionError(f"{name} differs from bert_jax on line {i}: {lines[i][:200]!r}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("text", nargs="?", default=DEFAULT_TEXT, help="a UTF-8 text file (default: Wikipedia leads)")
  p.add_argument("--vocab", default=None, help="a BERT vocab.txt (default: the bundled MiniLM's, uncased)")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--batch", type=int, default=1000, help="lines per call, for both sides")
  p.add_argument("--stock-fast", action="store_true", help="also time the stock pipeline's encode_batch_fast")
  p.add_argument("--full-path", action="store_true", help="also time bert_jax without its fast paths")
  args = p.parse_args(argv)
  vocab = args.vocab or os.path.join(bundled_minilm_path(), "vocab.txt")
  lines = read_lines(args.text)
  megabytes = sum(len(line.encode("utf-8")) for line in lines) / 1e6
  ascii_share = sum(len(line) for line in lines if line.isascii()) / max(1, sum(map(len, lines)))
  batches = [lines[i : i + args.batch] for i in range(0, len(lines), args.batch)]
  sides = encoders(vocab, args.stock_fast, args.full_path)
  print(
    f"{datetime.date.today()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
    f"tokenizers {tokenizers.__version__}"
  )
  print(
    f"{os.path.normpath(args.text)}: {len(lines)} lines, {megabytes:.2f} MB, {ascii_share:.0%} of characters in "
    f"ASCII lines; vocab {vocab}; batches of {args.batch}"
  )
  # An untimed pass each: builds what is built lazily and gives the ids every round must equal.
  expected = timed_pass(sides["bert_jax"], batches)[1]
  for name, encode in sides.items():
    check_same(name, timed_pass(encode, batches)[1], expected, lines)
  rates: dict[str, list[float]] = {name: [] for name in sides}
  others = [name for name in sides if name != "bert_jax"]
  header = ["round", *(f"{n} MB/s" for n in sides), *(f"bert_jax / {n}" for n in others)]
  print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
  for r in range(args.rounds):
    for name, encode in sides.items():
      seconds, ids = timed_pass(encode, batches)
      check_same(name, ids, expected, lines)
      rates[name].append(megabytes / seconds)
    ratios = [rates["bert_jax"][-1] / rates[n][-1] for n in others]
    row = [f"{rates[n][-1]:.2f}" for n in sides] + [f"{x:.2f}x" for x in ratios]
    print(f"| {r + 1} | " + " | ".join(row) + " |", flush=True)
  medians = [f"{statistics.median(rates[n]):.2f}" for n in sides]
  median_ratios = [
    f"{statistics.median(a / b for a, b in zip(rates['bert_jax'], rates[n])):.2f}x" for n in others
  ]
  print("| median | " + " | ".join(medians + median_ratios) + " |")
  print(f"ids identical on all {len(lines)} lines in every round")


if __name__ == "__main__":
  main()
