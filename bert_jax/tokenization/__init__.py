"""BERT WordPiece tokenization on the Hugging Face `tokenizers` engine (tokenizer.py, for now all of it)."""

from bert_jax.tokenization.tokenizer import (
  CJK_RANGES,
  CLS,
  CONTINUATION,
  MASK,
  MAX_WORD_CHARS,
  PAD,
  PADDING_CHOICES,
  SEP,
  SPECIAL_TOKENS,
  UNK,
  Tokenizer,
  _training_lines,
  _truncated_lengths,
  logger,
  train_wordpiece,
)

__all__ = [
  "CJK_RANGES",
  "CLS",
  "CONTINUATION",
  "MASK",
  "MAX_WORD_CHARS",
  "PAD",
  "PADDING_CHOICES",
  "SEP",
  "SPECIAL_TOKENS",
  "UNK",
  "Tokenizer",
  # Private, but imported by tests/test_tokenization.py and experiments/benchmarks/vocab_bench.py.
  "_training_lines",
  "_truncated_lengths",
  "logger",
  "train_wordpiece",
]
