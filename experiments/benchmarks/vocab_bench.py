"""WordPiece vocabulary training: tokenizers' own trainer (nondeterministic, huggingface/tokenizers#1794)
against bert_jax's `train_wordpiece` (deterministic), alternating, on one text file: seconds per training,
vocabulary sizes, whether the alphabets and "##" pieces agree, how many tokens the two share, and whether
repeated trainings of each agree with their first.

  .venv/bin/python experiments/benchmarks/vocab_bench.py ../shared/data/text/en_sotu.txt --vocab-size 30522
  .venv/bin/python experiments/benchmarks/vocab_bench.py ../shared/data/text/zh_peoples_daily_199801.txt \\
      --vocab-size 8000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tokenizers  # noqa: E402
from tokenizers import models, trainers  # noqa: E402

from bert_jax import tokenization  # noqa: E402


def engine_only(path: str, vocab_size: int, limit_alphabet: int) -> list[str]:
  """tokenizers' WordPieceTrainer alone, with train_wordpiece's normalizer, pre-tokenizer and lines."""
  shell = tokenization.Tokenizer(list(tokenization.SPECIAL_TOKENS), source="special tokens")
  engine = tokenizers.Tokenizer(
    models.WordPiece(unk_token=tokenization.UNK, continuing_subword_prefix=tokenization.CONTINUATION)
  )
  engine.normalizer, engine.pre_tokenizer = shell._engine.normalizer, shell._engine.pre_tokenizer
  trainer = trainers.WordPieceTrainer(
    vocab_size=vocab_size,
    min_frequency=2,
    limit_alphabet=limit_alphabet,
    special_tokens=list(tokenization.SPECIAL_TOKENS),
    continuing_subword_prefix=tokenization.CONTINUATION,
    show_progress=False,
  )
  engine.train_from_iterator(tokenization._training_lines([path], shell._prepare), trainer=trainer)
  return [t for t, _ in sorted(engine.get_vocab().items(), key=lambda item: item[1])]


def first_pieces(vocab: list[str]) -> set[str]:
  return {t for t in vocab if len(t) == 1 or (t.startswith("##") and len(t) == 3)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("text", help="a UTF-8 text file")
  p.add_argument("--vocab-size", type=int, default=30522)
  p.add_argument("--limit-alphabet", type=int, default=1000)
  p.add_argument("--rounds", type=int, default=2)
  args = p.parse_args(argv)
  runs: dict[str, list[tuple[float, list[str]]]] = {"tokenizers": [], "bert_jax": []}
  trainer_fns = {
    "tokenizers": lambda: engine_only(args.text, args.vocab_size, args.limit_alphabet),
    "bert_jax": lambda: list(
      tokenization.train_wordpiece(
        args.text, vocab_size=args.vocab_size, limit_alphabet=args.limit_alphabet
      ).vocab
    ),
  }
  for _ in range(args.rounds):
    for name, train in trainer_fns.items():
      start = time.perf_counter()
      vocab = train()
      runs[name].append((time.perf_counter() - start, vocab))
  print(
    f"{args.text}: vocab_size {args.vocab_size}, limit_alphabet {args.limit_alphabet}, {args.rounds} rounds"
  )
  print("| trainer | seconds | tokens | same as its first run |\n|---|---|---|---|")
  for name, results in runs.items():
    seconds = ", ".join(f"{s:.2f}" for s, _ in results)
    sizes = ", ".join(str(len(v)) for _, v in results)
    same = ", ".join(str(v == results[0][1]) for _, v in results[1:])
    print(f"| {name} | {seconds} | {sizes} | {same} |")
  theirs, ours = runs["tokenizers"][0][1], runs["bert_jax"][0][1]
  print(
    f"alphabet and '##' pieces equal: {first_pieces(theirs) == first_pieces(ours)}; "
    f"tokens shared by the first runs: {len(set(theirs) & set(ours))} of {len(ours)}"
  )


if __name__ == "__main__":
  main()
