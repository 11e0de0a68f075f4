"""Learning a WordPiece vocabulary from text files, deterministically, with the normalizer and
pre-tokenizer a Tokenizer uses."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Sequence

import tokenizers
from tokenizers import models, trainers

from bert_jax.tokenization.tokenizer import Tokenizer
from bert_jax.tokenization.vocab import CONTINUATION, MAX_WORD_CHARS, SPECIAL_TOKENS, UNK


def _training_lines(paths: list[str], prepare) -> Iterator[str]:
  for path in paths:
    with open(path, "rb") as f:
      for lineno, raw in enumerate(f, 1):
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise ValueError(
            f"training file {path!r} line {lineno} is not UTF-8 (byte 0x{raw[e.start]:02x})"
          ) from None
        yield prepare(line)


def _fixed_alphabet(
  paths: list[str], shell: Tokenizer, limit_alphabet: int, taken: set[str]
) -> tuple[list[str], list[str]]:
  """The characters a WordPiece training keeps and the continuation pieces ("##c") it starts from, decided
  here so that the engine's hash-map order decides nothing.

  tokenizers' trainer (0.23) gives the "##c" pieces their ids in the iteration order of a hash map of words,
  and breaks ties between equally frequent merges by those ids; it also cuts the alphabet at `limit_alphabet`
  by an unstable sort, so characters of equal count at the cut are kept or dropped by chance. Two trainings
  on the same text then differed in a third of a 650-token vocabulary (huggingface/tokenizers#1794). Here
  the words are counted with the engine's own normalizer and pre-tokenizer; the alphabet is the
  `limit_alphabet` most frequent characters, ties broken by code point, and the continuation pieces are
  those of alphabet characters seen inside a word (not first), sorted by code point: the same sets the
  trainer would make, in a fixed order.

  Speed: the pre-tokenizer runs once per distinct whitespace-separated string, not per line (10.7 MB of
  English: 2 s instead of 4.5 s; the engine's whole training takes 2 s). Exact because every character that
  Python's str.split takes for whitespace and that survives the normalizer is whitespace to the
  pre-tokenizer as well (tested over all code points)."""
  normalize = shell._engine.normalizer.normalize_str
  split = shell._engine.pre_tokenizer.pre_tokenize_str
  pieces: collections.Counter[str] = collections.Counter()
  for line in _training_lines(paths, shell._prepare):
    pieces.update(normalize(line).split())
  chars: collections.Counter[str] = collections.Counter()
  inner: set[str] = set()
  for piece, count in pieces.items():
    words = [w for w, _ in split(piece)]
    for c, n in collections.Counter("".join(words)).items():
      chars[c] += n * count
    inner.update("".join([w[1:] for w in words]))
  ranked = sorted(chars, key=lambda c: (-chars[c], ord(c)))
  alphabet = sorted(ranked[:limit_alphabet], key=ord)
  # A special token of one character is in the engine's vocabulary whatever the limit, so the engine makes a
  # continuation piece of it too.
  kept = set(alphabet) | {t for t in taken if len(t) == 1}
  continuations = [CONTINUATION + c for c in sorted(inner & kept, key=ord) if CONTINUATION + c not in taken]
  return alphabet, continuations


def train_wordpiece(
  files: str | os.PathLike | Sequence[str | os.PathLike],
  *,
  vocab_size: int = 30522,
  lowercase: bool = True,
  strip_accents: bool | None = None,
  min_frequency: int = 2,
  limit_alphabet: int = 1000,
  special_tokens: Sequence[str] = SPECIAL_TOKENS,
) -> Tokenizer:
  """Learns a WordPiece vocab from UTF-8 text files, normalizing and splitting as Tokenizer does.

  The special tokens take the first ids, in the order given. Characters beyond the
  `limit_alphabet` most frequent are left out (they become [UNK]): raise it for Chinese or
  Japanese, where every ideograph is a word of its own.

  Deterministic: the same files and arguments give the same vocabulary in every run and process
  (`_fixed_alphabet`; tokenizers' own trainer does not). The text is read twice: once in Python to fix the
  alphabet, once by the engine to learn the merges.
  """
  paths = [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(f) for f in files]
  if not paths:
    raise ValueError("train_wordpiece needs at least one text file")
  for p in paths:
    if not os.path.isfile(p):
      raise FileNotFoundError(f"training file {p!r} does not exist")
  special_tokens = list(special_tokens)
  if UNK not in special_tokens or len(set(special_tokens)) != len(special_tokens):
    raise ValueError(f"special_tokens must hold {UNK} and no token twice, got {special_tokens}")
  if limit_alphabet < 1:
    raise ValueError(f"limit_alphabet={limit_alphabet}: expected at least 1 character")
  if vocab_size <= len(special_tokens):
    raise ValueError(
      f"vocab_size={vocab_size} leaves no room beyond the {len(special_tokens)} special tokens"
    )

  # A Tokenizer of the special tokens alone lends its exact normalizer, pre-tokenizer and sigma rule.
  shell = Tokenizer(special_tokens, lowercase=lowercase, strip_accents=strip_accents, source="special tokens")
  engine = tokenizers.Tokenizer(
    models.WordPiece(
      unk_token=UNK, continuing_subword_prefix=CONTINUATION, max_input_chars_per_word=MAX_WORD_CHARS
    )
  )
  engine.normalizer = shell._engine.normalizer
  engine.pre_tokenizer = shell._engine.pre_tokenizer
  alphabet, continuations = _fixed_alphabet(paths, shell, limit_alphabet, set(special_tokens))
  if not alphabet:
    raise ValueError(f"no text to learn from in {paths}")
  # The alphabet and then the continuation pieces go in as extra special tokens, which take their ids in
  # this order before the engine looks at a word: the layout tokenizers' own trainer makes (special tokens,
  # alphabet, pieces, merges), and with it its preference among equally frequent merges (lower ids first),
  # with the pieces in code-point order instead of hash-map order. The alphabet is also the initial one with
  # the limit at its size, so the engine adds no other character.
  pinned = [c for c in alphabet if c not in special_tokens] + continuations
  trainer = trainers.WordPieceTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    limit_alphabet=len(alphabet),
    initial_alphabet=alphabet,
    special_tokens=special_tokens + pinned,
    continuing_subword_prefix=CONTINUATION,
    show_progress=False,
  )
  # Lines go through Python (not the engine's file reader) for the sigma rule and for errors
  # that name the file and line.
  engine.train_from_iterator(_training_lines(paths, shell._prepare), trainer=trainer)
  by_id = sorted((i, t) for t, i in engine.get_vocab().items())
  if [i for i, _ in by_id] != list(range(len(by_id))):
    raise RuntimeError("the trained vocabulary's ids are not contiguous")  # an engine bug if ever
  vocab = [t for _, t in by_id]
  if vocab[: len(special_tokens) + len(pinned)] != special_tokens + pinned:
    raise RuntimeError("the engine did not keep the pinned alphabet first")  # an engine change if ever
  return Tokenizer(
    vocab,
    lowercase=lowercase,
    strip_accents=strip_accents,
    source=f"vocab trained on {paths}",
  )
