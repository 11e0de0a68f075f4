"""BERT WordPiece tokenization on the Hugging Face `tokenizers` engine, matching BERT's reference
tokenizer. Every name is importable from here, as from the single module this package once was.

  chars.py      character classes from Python's Unicode tables; the engine's normalizer and pre-tokenizer
  vocab.py      special tokens; reading and checking vocab.txt, tokenizer.json, tokenizer_config.json; saving
  encodings.py  engine encodings -> model inputs: truncation lengths, offsets, padded arrays
  tokenizer.py  the Tokenizer class: loading, encoding, decoding, saving
  training.py   train_wordpiece: a deterministic WordPiece vocabulary from text files
"""

from bert_jax.tokenization.chars import CJK_RANGES
from bert_jax.tokenization.encodings import PADDING_CHOICES, _truncated_lengths
from bert_jax.tokenization.tokenizer import Tokenizer, logger
from bert_jax.tokenization.training import _training_lines, train_wordpiece
from bert_jax.tokenization.vocab import CLS, CONTINUATION, MASK, MAX_WORD_CHARS, PAD, SEP, SPECIAL_TOKENS, UNK

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
