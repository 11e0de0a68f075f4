"""The `Tokenizer` class: a BERT WordPiece vocabulary with its casing rules, built on the Hugging Face
`tokenizers` engine; loads from vocab files and checkpoint folders, encodes texts and pairs, decodes.

The behaviour is BERT's reference tokenizer (Google's `tokenization.py`, kept in transformers 5 as
`BertTokenizerLegacy`): drop control characters, map whitespace to spaces, make each CJK ideograph
a word of its own, NFC, lower-case and strip accents as the checkpoint says, split off
punctuation, then greedy longest-match-first WordPiece with `##` continuations and `[UNK]` for
words over 100 characters. The character-level steps are in chars.py, which says why they are not
the engine's own BERT steps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tokenizers
from tokenizers import models, processors

from bert_jax.tokenization.chars import (
  _build_normalizer,
  _build_plain_pre_tokenizer,
  _build_pre_tokenizer,
  _final_sigmas,
  _is_plain,
  _without_surrogates,
)
from bert_jax.tokenization.encodings import (
  _as_arrays,
  _as_lists,
  _batch_offsets,
  _offsets_over_marks,
  _padded_width,
  _padding_mode,
  _truncated_lengths,
)
from bert_jax.tokenization.vocab import (
  CLS,
  CONTINUATION,
  MASK,
  MAX_WORD_CHARS,
  PAD,
  SEP,
  SPECIAL_TOKENS,
  UNK,
  _looks_cased,
  _read_tokenizer_config,
  _read_vocab_file,
  _tokenizer_json_settings,
  _write_vocab_folder,
)

# The package's name, as before it was split into modules, so that log filters keep matching.
logger = logging.getLogger("bert_jax.tokenization")

# Spaces the reference's decode takes out again (English punctuation and clitics).
_DECODE_CLEANUP = (
  (" .", "."),
  (" ?", "?"),
  (" !", "!"),
  (" ,", ","),
  (" ' ", "'"),
  (" n't", "n't"),
  (" 'm", "'m"),
  (" 's", "'s"),
  (" 've", "'ve"),
  (" 're", "'re"),
)


def _check_texts(texts: Sequence[Any], name: str) -> None:
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise TypeError(f"{name}[{i}] is {type(t).__name__}, expected str")


def _as_batch(
  texts: str | Sequence[str], pairs: str | Sequence[str] | None
) -> tuple[list[str], list[str] | None]:
  """Texts and pairs as checked lists: one string (and its pair, if any) is a batch of one."""
  if isinstance(texts, str):
    texts = [texts]
    pairs = [pairs] if isinstance(pairs, str) else pairs
  texts = list(texts)
  _check_texts(texts, "texts")
  if pairs is not None:
    if isinstance(pairs, str):
      raise TypeError("pairs is one string but texts is a batch; pass one pair per text")
    pairs = list(pairs)
    _check_texts(pairs, "pairs")
    if len(pairs) != len(texts):
      raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs")
  return texts, pairs


class Tokenizer:
  """BERT WordPiece tokenizer: a vocab and casing rules; encodes single texts and pairs.

  Special tokens written in the text ("[MASK]" etc., exactly so spelled) stay whole, as in
  transformers; "[mask]" is ordinary text.
  """

  def __init__(
    self,
    vocab: Sequence[str],
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    split_chinese_chars: bool = True,
    model_max_length: int | None = None,
    source: str = "vocabulary",
  ):
    self._vocab = tuple(vocab)
    self._ids = {t: i for i, t in enumerate(self._vocab)}
    self._source = source
    if len(self._ids) != len(self._vocab):
      seen: set[str] = set()
      dup = next(t for t in self._vocab if t in seen or seen.add(t))
      raise ValueError(f"{source} lists {dup!r} more than once; ids would be ambiguous")
    if UNK not in self._ids:
      raise ValueError(f"{source} has no {UNK} token; WordPiece needs it for words it cannot spell")
    self.lowercase = bool(lowercase)
    # The reference's rule: unspecified accent stripping follows lower-casing.
    self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
    self.split_chinese_chars = bool(split_chinese_chars)
    self.model_max_length = model_max_length
    self._engine = self._build_engine()
    self._plain_engine: tokenizers.Tokenizer | None = None  # built when first needed: see _plain

  def _build_engine(self, plain: bool = False) -> tokenizers.Tokenizer:
    """The engine: the full pipeline, or with `plain` the lean one for printable ASCII (chars._is_plain),
    which has no normalizer (lower-casing is done in Python) and splits at spaces and ASCII punctuation."""
    engine = tokenizers.Tokenizer(
      models.WordPiece(
        self._ids,
        unk_token=UNK,
        continuing_subword_prefix=CONTINUATION,
        max_input_chars_per_word=MAX_WORD_CHARS,
      )
    )
    if plain:
      engine.pre_tokenizer = _build_plain_pre_tokenizer()
    else:
      engine.normalizer = _build_normalizer(self.lowercase, self.strip_accents)
      engine.pre_tokenizer = _build_pre_tokenizer(self.split_chinese_chars)
    # Only the specials the vocab holds: the engine would give the others new ids past the end.
    engine.add_special_tokens(
      [tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t in self._ids]
    )
    if CLS in self._ids and SEP in self._ids:
      engine.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, self._ids[CLS]), (SEP, self._ids[SEP])],
      )
    return engine

  # -- construction -------------------------------------------------------------------------------

  @classmethod
  def from_vocab(
    cls,
    vocab_path: str | os.PathLike,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    split_chinese_chars: bool = True,
    model_max_length: int | None = None,
  ) -> Tokenizer:
    """From a BERT vocab.txt: one token per line, ids are line numbers (from 0)."""
    vocab = _read_vocab_file(vocab_path)
    if lowercase == _looks_cased(vocab):
      consequence = (
        "its capitalised tokens can never match" if lowercase else "capitalised words will split badly"
      )
      logger.warning(
        "vocab file %r looks %s but lowercase=%s: %s",
        os.fspath(vocab_path),
        "cased" if lowercase else "uncased",
        lowercase,
        consequence,
      )
    return cls(
      vocab,
      lowercase=lowercase,
      strip_accents=strip_accents,
      split_chinese_chars=split_chinese_chars,
      model_max_length=model_max_length,
      source=f"vocab file {os.fspath(vocab_path)!r}",
    )

  @classmethod
  def from_tokenizer_json(cls, path: str | os.PathLike) -> Tokenizer:
    """From a Hugging Face tokenizer.json of a BERT WordPiece tokenizer.

    Its vocab and casing are used, its padding and truncation are not (MiniLM's file pads and
    truncates to 128): pass `max_length` / `padding` per call.
    """
    return cls(**_tokenizer_json_settings(os.fspath(path)))

  @classmethod
  def from_pretrained(cls, directory: str | os.PathLike) -> Tokenizer:
    """From a checkpoint folder: vocab.txt + tokenizer_config.json, else tokenizer.json, else a
    bare vocab.txt (Google's folders), whose casing the vocab itself shows; or from the HuggingFace Hub,
    `hf://ORG/NAME[@REVISION]` (bert_jax/hub.py)."""
    from bert_jax import hub

    directory = hub.local_folder(directory, weights=False)
    if not os.path.isdir(directory):
      if os.path.isfile(directory):
        raise ValueError(
          f"{directory!r} is a file; from_pretrained takes a folder (from_vocab reads a vocab.txt, "
          "from_tokenizer_json a tokenizer.json)"
        )
      raise FileNotFoundError(f"tokenizer folder {directory!r} does not exist")
    vocab_path = os.path.join(directory, "vocab.txt")
    config_path = os.path.join(directory, "tokenizer_config.json")
    json_path = os.path.join(directory, "tokenizer.json")
    config, max_len = _read_tokenizer_config(config_path)
    if not os.path.isfile(vocab_path) or "do_lower_case" not in config:
      if os.path.isfile(json_path):
        tok = cls.from_tokenizer_json(json_path)
        tok.model_max_length = max_len
        return tok
      if not os.path.isfile(vocab_path):
        raise FileNotFoundError(
          f"tokenizer folder {directory!r} has neither vocab.txt nor tokenizer.json; "
          "expected a BERT tokenizer (vocab.txt + tokenizer_config.json, or tokenizer.json)"
        )
    if "do_lower_case" in config:
      lowercase = bool(config["do_lower_case"])
    else:
      lowercase = not _looks_cased(_read_vocab_file(vocab_path))
      logger.info(
        "%s does not say its casing; its vocab looks %s", directory, "uncased" if lowercase else "cased"
      )
    strip_accents = config.get("strip_accents")
    return cls.from_vocab(
      vocab_path,
      lowercase=lowercase,
      strip_accents=strip_accents,
      split_chinese_chars=config.get("tokenize_chinese_chars", True),
      model_max_length=max_len,
    )

  # -- vocabulary ---------------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return len(self._vocab)

  @property
  def vocab(self) -> tuple[str, ...]:
    """The tokens in id order."""
    return self._vocab

  def _special_id(self, token: str, purpose: str) -> int:
    try:
      return self._ids[token]
    except KeyError:
      raise ValueError(f"{self._source} has no {token} token, needed {purpose}") from None

  @property
  def pad_id(self) -> int:
    return self._special_id(PAD, "for padding")

  @property
  def unk_id(self) -> int:
    return self._ids[UNK]

  @property
  def cls_id(self) -> int:
    return self._special_id(CLS, "to start a sequence")

  @property
  def sep_id(self) -> int:
    return self._special_id(SEP, "to end a segment")

  @property
  def mask_id(self) -> int:
    return self._special_id(MASK, "for masked language modelling")

  def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
    """Tokens outside the vocab map to the [UNK] id."""
    unk = self._ids[UNK]
    if isinstance(tokens, str):
      return self._ids.get(tokens, unk)
    return [self._ids.get(t, unk) for t in tokens]

  def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
    if isinstance(ids, (int, np.integer)):
      return self._vocab[self._check_id(ids)]
    return [self._vocab[self._check_id(i)] for i in ids]

  def _check_id(self, i) -> int:
    i = int(i)
    if not 0 <= i < len(self._vocab):
      raise ValueError(f"token id {i} is outside the vocabulary (size {len(self._vocab)}) of {self._source}")
    return i

  # -- encoding -----------------------------------------------------------------------------------

  def _prepare(self, text: str) -> str:
    if self.lowercase and "Σ" in text:
      text = _final_sigmas(text, self.split_chinese_chars)
    return text

  @property
  def _plain(self) -> tokenizers.Tokenizer:
    if self._plain_engine is None:
      self._plain_engine = self._build_engine(plain=True)
    return self._plain_engine

  def _takes_plain_path(self, x: str | tuple[str, str]) -> bool:
    # Lower-cased in Python, a "[MASK]" written in the text would no longer be the special token.
    texts = x if isinstance(x, tuple) else (x,)
    return all(_is_plain(t) and not (self.lowercase and "[" in t) for t in texts)

  def _encode_many(
    self, inputs: list, add_special_tokens: bool, offsets: bool = True, plain_path: bool = True
  ) -> list[tokenizers.Encoding]:
    """The engine's encodings of texts or (text, pair) tuples, in order.

    Printable-ASCII inputs take the lean engine (same ids, tokens and offsets; a third less work on
    English), the rest the full pipeline; `plain_path=False` sends all through the full one. Without
    `offsets` the engine skips offset tracking and every offset is (0, 0): for callers after ids.
    """
    groups: tuple[list[int], list[int]] = ([], [])  # indices of inputs for the full and the plain engine
    for i, x in enumerate(inputs):
      groups[plain_path and self._takes_plain_path(x)].append(i)
    if not groups[1]:
      return self._encode_group(inputs, False, add_special_tokens, offsets)
    if not groups[0]:
      return self._encode_group(inputs, True, add_special_tokens, offsets)
    encodings: list = [None] * len(inputs)
    for plain, indices in zip((False, True), groups):
      group = self._encode_group([inputs[i] for i in indices], plain, add_special_tokens, offsets)
      for i, enc in zip(indices, group):
        encodings[i] = enc
    return encodings

  def _encode_group(
    self, inputs: list, plain: bool, add_special_tokens: bool, offsets: bool
  ) -> list[tokenizers.Encoding]:
    engine = self._plain if plain else self._engine
    encode = engine.encode_batch if offsets else engine.encode_batch_fast
    if plain and self.lowercase:
      # The only normalizing step that changes plain text; one to one, so offsets stay valid.
      inputs = [tuple(t.lower() for t in x) if isinstance(x, tuple) else x.lower() for x in inputs]
    try:
      return encode(inputs, add_special_tokens=add_special_tokens)
    except TypeError:
      # The caller checked the types, so this is a lone surrogate: rare enough to retry them all.
      fixed = [
        tuple(map(_without_surrogates, x)) if isinstance(x, tuple) else _without_surrogates(x) for x in inputs
      ]
      return encode(fixed, add_special_tokens=add_special_tokens)

  def basic_tokenize(self, text: str) -> list[str]:
    """The words WordPiece sees: the normalized text split at spaces, punctuation and ideographs."""
    _check_texts([text], "text")
    normalized = self._engine.normalizer.normalize_str(_without_surrogates(self._prepare(text)))
    return [w for w, _ in self._engine.pre_tokenizer.pre_tokenize_str(normalized)]

  def tokenize(self, text: str) -> list[str]:
    """The WordPiece tokens of one text, without [CLS]/[SEP]."""
    _check_texts([text], "text")
    return self._encode_many([self._prepare(text)], add_special_tokens=False)[0].tokens

  def _max_length(self, max_length: int | None, has_pair: bool, add_special_tokens: bool) -> int | None:
    if max_length is None:
      max_length = self.model_max_length
    if max_length is None:
      return None
    specials = (3 if has_pair else 2) if add_special_tokens else 0
    if not isinstance(max_length, (int, np.integer)) or max_length < specials:
      raise ValueError(
        f"max_length must be an int of at least {specials} (the special tokens), got {max_length!r}"
      )
    return int(max_length)

  def _encode_batch(
    self,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int | None,
    add_special_tokens: bool = True,
    offsets: bool = True,
  ) -> list[tokenizers.Encoding]:
    if add_special_tokens:
      _ = (self.cls_id, self.sep_id)  # fails early, naming the vocab, if either is missing
    texts = [self._prepare(t) for t in texts]
    if pairs is not None:
      pairs = [self._prepare(t) for t in pairs]
    encodings = self._encode_many(
      texts if pairs is None else list(zip(texts, pairs)), add_special_tokens, offsets=offsets
    )
    overlong = [] if max_length is None else [i for i, enc in enumerate(encodings) if len(enc) > max_length]
    if overlong:
      # Each segment alone, cut to its share, then the same template as the untruncated rows.
      budget = max_length - ((2 if pairs is None else 3) if add_special_tokens else 0)
      firsts = self._encode_many([texts[i] for i in overlong], add_special_tokens=False, offsets=offsets)
      seconds = (
        [None] * len(overlong)
        if pairs is None
        else self._encode_many([pairs[i] for i in overlong], add_special_tokens=False, offsets=offsets)
      )
      for i, first, second in zip(overlong, firsts, seconds):
        n_first, n_second = _truncated_lengths(len(first), None if second is None else len(second), budget)
        first.truncate(n_first)
        if second is not None:
          second.truncate(n_second)
        encodings[i] = self._engine.post_process(first, second, add_special_tokens=add_special_tokens)
    return encodings

  def encode(
    self,
    text: str,
    pair: str | None = None,
    *,
    max_length: int | None = None,
    add_special_tokens: bool = True,
  ) -> dict[str, list]:
    """One example as lists: input_ids, token_type_ids, attention_mask, offsets, tokens.

    Offsets are (start, end) character offsets into the original text of the token's own
    segment (`text` or `pair`); (0, 0) for the added [CLS]/[SEP]. Beyond `max_length` (default:
    the checkpoint's model_max_length, if known) pairs are cut longest-first.
    """
    _check_texts([text] if pair is None else [text, pair], "text/pair")
    limit = self._max_length(max_length, pair is not None, add_special_tokens)
    enc = self._encode_batch([text], None if pair is None else [pair], limit, add_special_tokens)[0]
    return {
      "input_ids": list(enc.ids),
      "token_type_ids": list(enc.type_ids),
      "attention_mask": list(enc.attention_mask),
      "offsets": [tuple(o) for o in _offsets_over_marks(enc, [text] if pair is None else [text, pair])],
      "tokens": list(enc.tokens),
    }

  def __call__(
    self,
    texts: str | Sequence[str],
    pairs: str | Sequence[str] | None = None,
    *,
    max_length: int | None = None,
    truncation: bool = True,
    padding: str | bool = "longest",
    pad_to_multiple_of: int | None = None,
    return_offsets: bool = False,
  ) -> dict[str, Any]:
    """Encodes a batch with [CLS]/[SEP] into int32 arrays (B, L); offsets, if asked, (B, L, 2).

    padding: "longest" (the batch's longest row), "max_length", or False / "do_not_pad" (lists
    come back, not arrays). Truncation (to max_length, default the checkpoint's
    model_max_length) is BERT's longest-first for pairs. Without return_offsets the engine tracks no
    offsets: `tokenizer(texts, padding=False, truncation=False)["input_ids"]` is the fast ids path.
    """
    texts, pairs = _as_batch(texts, pairs)
    padding, pad = _padding_mode(padding, pad_to_multiple_of)
    limit = self._max_length(max_length, pairs is not None, True)
    if padding == "max_length" and limit is None:
      raise ValueError('padding="max_length" needs max_length (or a tokenizer with model_max_length)')
    # Offsets cost the engine work; without return_offsets it skips them (ids are the same).
    encodings = self._encode_batch(texts, pairs, limit if truncation else None, offsets=return_offsets)
    offset_rows = _batch_offsets(encodings, texts, pairs) if return_offsets else None
    if not pad:
      return _as_lists(encodings, offset_rows, pairs is not None)
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    width = _padded_width(lengths, limit if padding == "max_length" else None, pad_to_multiple_of)
    # A vocab without [PAD] serves batches that need no padding.
    pad_id = self.pad_id if (lengths < width).any() else 0
    return _as_arrays(encodings, lengths, width, pad_id, offset_rows)

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    """Joins wordpieces back into text (lossy: case, accents and spaces before punctuation)."""
    tokens = [self._vocab[self._check_id(i)] for i in np.asarray(ids).reshape(-1).tolist()]
    if skip_special_tokens:
      tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
    text = " ".join(tokens).replace(" " + CONTINUATION, "").strip()
    # Cleaned on the joined string, as the reference does; the engine's WordPiece decoder cleans
    # token by token and so keeps "it ' s".
    for spaced, tight in _DECODE_CLEANUP:
      text = text.replace(spaced, tight)
    return text

  # -- persistence --------------------------------------------------------------------------------

  def save(self, directory: str | os.PathLike) -> None:
    """Writes vocab.txt + tokenizer_config.json: a folder transformers' BertTokenizer loads as is."""
    _write_vocab_folder(
      os.fspath(directory),
      self._vocab,
      lowercase=self.lowercase,
      strip_accents=self.strip_accents,
      split_chinese_chars=self.split_chinese_chars,
      model_max_length=self.model_max_length,
    )

  def __getstate__(self) -> dict[str, Any]:
    # Rebuilt when unpickled (e.g. in data-loader workers) rather than serialising the engine.
    state = dict(self.__dict__)
    del state["_engine"]
    state.pop("_plain_engine", None)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._engine = self._build_engine()
    self._plain_engine = None

  def __repr__(self) -> str:
    return (
      f"Tokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
      f"strip_accents={self.strip_accents}, source={self._source})"
    )
