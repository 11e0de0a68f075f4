"""BERT WordPiece tokenization on the Hugging Face `tokenizers` engine.

The behaviour is BERT's reference tokenizer (Google's `tokenization.py`, kept in transformers 5 as
`BertTokenizerLegacy`): drop control characters, map whitespace to spaces, make each CJK ideograph
a word of its own, NFC, lower-case and strip accents as the checkpoint says, split off
punctuation, then greedy longest-match-first WordPiece with `##` continuations and `[UNK]` for
words over 100 characters.

Why not the engine's `BertNormalizer` + `BertPreTokenizer`: on tokenizers 0.23 they disagree with
the reference on about 830k code points (they keep unassigned code points; their Unicode tables
predate many punctuation marks, combining marks and format characters; they miss part of CJK
Extension E), they never NFC-compose (a decomposed "e" + U+0301 stays two characters in a cased
model) and they lower-case a word-final Greek capital sigma to "σ" where str.lower() gives "ς".
So the pipeline is built from the engine's primitive steps (regex replace, NFC, NFD, lowercase,
regex split) with character classes computed from Python's `unicodedata`, the tables the reference
reads, and the final sigma is settled in Python before the engine sees the text. Throughput is
that of the stock pipeline (measured on English and Chinese). What still differs: a few code
points whose NFC/NFD data changed between the engine's Unicode version and Python's (U+11938,
U+1DF6 on Python 3.11).
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import os
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

from bert_jax.files import write_json, write_text

logger = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"
MAX_WORD_CHARS = 100

# The reference's "Chinese characters": CJK Unified Ideographs, extensions A-E and the
# compatibility ideographs. Kana and Hangul are not among them: those scripts write words.
CJK_RANGES = (
  (0x4E00, 0x9FFF),
  (0x3400, 0x4DBF),
  (0x20000, 0x2A6DF),
  (0x2A700, 0x2B73F),
  (0x2B740, 0x2B81F),
  (0x2B820, 0x2CEAF),
  (0xF900, 0xFAFF),
  (0x2F800, 0x2FA1F),
)

PADDING_CHOICES = ("longest", "max_length", False, "do_not_pad")
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


# -------------------------------------------------------------------------------------------------
# Character classes from Python's Unicode tables (the ones the reference reads).


@functools.cache
def _category_runs() -> tuple[tuple[int, int, str], ...]:
  """(first, last, category) runs over all code points: about 4k runs, built once (~0.2 s)."""
  runs, start = [], 0
  for cat, group in itertools.groupby(map(chr, range(0x110000)), unicodedata.category):
    n = sum(1 for _ in group)
    runs.append((start, start + n - 1, cat))
    start += n
  return tuple(runs)


def _merge(*range_lists: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
  merged: list[list[int]] = []
  for a, b in sorted(itertools.chain(*range_lists)):
    if merged and a <= merged[-1][1] + 1:
      merged[-1][1] = max(merged[-1][1], b)
    else:
      merged.append([a, b])
  return [(a, b) for a, b in merged]


def _subtract(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
  out = []
  for a, b in ranges:
    pieces = [(a, b)]
    for ha, hb in holes:
      pieces = [p for x, y in pieces for p in ((x, min(y, ha - 1)), (max(x, hb + 1), y)) if p[0] <= p[1]]
    out.extend(pieces)
  return out


def _regex_class(ranges: Sequence[tuple[int, int]]) -> str:
  # Every member is an escape, so no character can change the meaning of the class.
  parts = (f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
  return "[" + "".join(parts) + "]"


@functools.cache
def _char_classes() -> dict[str, str]:
  runs = _category_runs()

  def with_category(pred) -> list[tuple[int, int]]:
    return [(a, b) for a, b, cat in runs if pred(cat)]

  tab_lf_cr = [(0x09, 0x0A), (0x0D, 0x0D)]
  # Surrogates (Cs) never reach the engine (see _without_surrogates); the rest of C* goes.
  control = with_category(lambda c: c[0] == "C" and c != "Cs")
  removed = _subtract(_merge(control, [(0, 0), (0xFFFD, 0xFFFD)]), tab_lf_cr)
  blank = _merge(with_category(lambda c: c == "Zs"), tab_lf_cr)
  # All non-alphanumeric printable ASCII counts as punctuation, "$" and "^" included.
  punct = _merge(with_category(lambda c: c[0] == "P"), [(33, 47), (58, 64), (91, 96), (123, 126)])
  # The reference splits words with str.split(), i.e. on whatever Python calls whitespace.
  space = _merge((ord(c), ord(c)) for c in map(chr, range(0x110000)) if c.isspace())
  return {
    "removed": _regex_class(removed),
    "blank": _regex_class(blank),
    "space": _regex_class(space),
    "punct": _regex_class(punct),
    "punct_or_cjk": _regex_class(_merge(punct, CJK_RANGES)),
    "nonspacing_mark": _regex_class(with_category(lambda c: c == "Mn")),
  }


def _build_normalizer(lowercase: bool, strip_accents: bool) -> normalizers.Normalizer:
  cc = _char_classes()
  steps = [
    normalizers.Replace(tokenizers.Regex(cc["removed"]), ""),
    normalizers.Replace(tokenizers.Regex(cc["blank"]), " "),
    # The reference composes after cleaning and before changing case, as here.
    normalizers.NFC(),
  ]
  if lowercase:
    steps.append(normalizers.Lowercase())
  if strip_accents:
    steps += [normalizers.NFD(), normalizers.Replace(tokenizers.Regex(cc["nonspacing_mark"]), "")]
  return normalizers.Sequence(steps)


def _build_pre_tokenizer(split_chinese_chars: bool) -> pre_tokenizers.PreTokenizer:
  cc = _char_classes()
  # Isolating each ideograph has the effect of the reference's padding it with spaces.
  isolate = cc["punct_or_cjk"] if split_chinese_chars else cc["punct"]
  return pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(tokenizers.Regex(cc["space"] + "+"), behavior="removed"),
      pre_tokenizers.Split(tokenizers.Regex(isolate), behavior="isolated"),
    ]
  )


def _is_removed(ch: str) -> bool:
  return ch in "\x00\ufffd" or (unicodedata.category(ch)[0] == "C" and ch not in "\t\n\r")


def _final_sigmas(text: str, split_chinese_chars: bool) -> str:
  """Writes "ς" for each capital sigma that the reference lower-cases to the final form.

  The reference lower-cases whole words (after dropping control characters) with str.lower(),
  which picks "ς" at the end of a word; the engine lower-cases character by character. A
  one-for-one replacement keeps every offset valid.
  """

  def ends_word(ch: str) -> bool:
    if _is_removed(ch):
      return False
    return ch.isspace() or (split_chinese_chars and any(a <= ord(ch) <= b for a, b in CJK_RANGES))

  chars = list(text)
  for i, ch in enumerate(text):
    if ch != "Σ":
      continue
    start, stop = i, i + 1
    while start > 0 and not ends_word(text[start - 1]):
      start -= 1
    while stop < len(text) and not ends_word(text[stop]):
      stop += 1
    left = "".join(c for c in text[start:i] if not _is_removed(c))
    right = "".join(c for c in text[i + 1 : stop] if not _is_removed(c))
    # Apart from sigma, lower() maps each character independently (sometimes to several), so the
    # sigma lands right after the lowered left part.
    chars[i] = (left + "Σ" + right).lower()[len(left.lower())]
  return "".join(chars)


def _without_surrogates(text: str) -> str:
  # Lone surrogates cannot cross into Rust; the reference drops them (category Cs). NUL is
  # dropped by the normalizer as well and keeps every offset where it was.
  return "".join("\x00" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _offsets_over_marks(enc: tokenizers.Encoding, segments: Sequence[str]) -> list[tuple[int, int]]:
  """The engine's offsets, widened over combining marks that normalization folded into a token.

  The engine aligns a composed character ("e" + U+0301 -> "é") with its first original
  character only, so the span would end before the accent; stripped marks likewise fall out of
  their word's span. Text that is already NFC never needs this.
  """
  offsets = enc.offsets
  if all(unicodedata.is_normalized("NFC", t) for t in segments):
    return offsets
  offsets = list(offsets)
  sequence_ids = enc.sequence_ids
  for k, text in enumerate(segments):
    rows = [i for i, sid in enumerate(sequence_ids) if sid == k]
    for n, i in enumerate(rows):
      start, end = offsets[i]
      stop = end
      while stop < len(text) and unicodedata.category(text[stop]) in ("Mn", "Mc", "Me"):
        stop += 1
      # Only marks no later token claims: a later token starting before `stop` owns them.
      if stop > end and (n + 1 == len(rows) or offsets[rows[n + 1]][0] >= stop):
        offsets[i] = (start, stop)
  return offsets


def _truncated_lengths(n_a: int, n_b: int | None, budget: int) -> tuple[int, int | None]:
  """Segment lengths after BERT's longest-first truncation to `budget` tokens (no specials).

  The reference drops one token at a time from the longer segment, from the second on a tie. In
  closed form: a segment within its half of the budget stays whole and the other gets the rest,
  else the first keeps ceil(budget / 2) and the second floor(budget / 2). The engine's own
  LongestFirst disagrees (e.g. on ties), so it is not used.
  """
  if n_b is None:
    return min(n_a, budget), None
  if n_a + n_b <= budget:
    return n_a, n_b
  if 2 * n_a <= budget:
    return n_a, budget - n_a
  if 2 * n_b <= budget:
    return budget - n_b, n_b
  return (budget + 1) // 2, budget // 2


# -------------------------------------------------------------------------------------------------
# Vocabulary files.


def _read_vocab_file(path: str | os.PathLike) -> list[str]:
  """Reads a BERT vocab.txt (one token per line; the line number, from 0, is the id), checking it."""
  path = os.fspath(path)
  what = f"vocab file {path!r}"
  if os.path.isdir(path):
    raise ValueError(f"{what} is a folder; expected a vocab.txt (Tokenizer.from_pretrained takes folders)")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what} does not exist; expected a vocab.txt with one token per line")
  with open(path, "rb") as f:
    raw = f.read()
  if b"\x00" in raw:
    line = raw[: raw.index(b"\x00")].count(b"\n") + 1
    raise ValueError(f"{what} is binary (NUL byte on line {line}); expected UTF-8 text, one token per line")
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[: e.start].count(b"\n") + 1
    raise ValueError(
      f"{what} is not UTF-8 (byte 0x{raw[e.start]:02x} on line {line}); expected a vocab.txt"
    ) from None
  if text.lstrip()[:1] in ("{", "["):  # "[PAD]" starts a real vocab, so parse to be sure
    try:
      parsed = json.loads(text)
    except ValueError:
      parsed = None
    if isinstance(parsed, (dict, list)):
      raise ValueError(
        f"{what} is JSON, not a vocab.txt; for a tokenizer.json use Tokenizer.from_tokenizer_json"
      )
  # Windows line ends, a byte-order mark and blank lines at the end are editing artefacts: BERT
  # tokens never contain whitespace, so none of them can be meant as a token.
  lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
  while lines and lines[-1] == "":
    lines.pop()
  if not lines:
    raise ValueError(f"{what} is empty; expected one token per line")
  seen: dict[str, int] = {}
  for lineno, token in enumerate(lines, 1):
    if token == "":
      raise ValueError(f"{what} has an empty line {lineno}; every line holds a token (ids are line numbers)")
    if any(c.isspace() for c in token):
      hint = ""
      fields = token.split()
      if len(fields) == 2 and fields[1].lstrip("-").replace(".", "", 1).isdigit():
        hint = " (it looks like 'token score' pairs: a sentencepiece .vocab or a word-count file?)"
      raise ValueError(
        f"{what} line {lineno} is {token!r}, with whitespace in it; BERT tokens have none{hint}"
      )
    if token in seen:
      raise ValueError(
        f"{what} lists {token!r} twice (lines {seen[token]} and {lineno}); ids would be ambiguous"
      )
    seen[token] = lineno
  return lines


def _looks_cased(vocab: Sequence[str]) -> bool:
  """True when over 1% of the tokens (outside [BRACKETED] specials) have capitals."""
  upper = sum(1 for t in vocab if t != t.lower() and not (t.startswith("[") and t.endswith("]")))
  return upper > max(1, len(vocab) // 100)


def _read_json(path: str, what: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{what} {path!r} is not valid JSON ({e})") from None


def _check_config(config: dict[str, Any], path: str) -> None:
  """Refuses tokenizer_config.json settings this tokenizer would silently ignore."""
  where = f"tokenizer config {path!r}"
  if config.get("do_basic_tokenize", True) is False:
    raise ValueError(f"{where} sets do_basic_tokenize=false; only BERT's basic tokenization is supported")
  for key in ("never_split", "additional_special_tokens"):
    if config.get(key):
      raise ValueError(f"{where} sets {key}={config[key]!r}; only BERT's five special tokens are supported")
  names = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}
  for key, expected in names.items():
    value = config.get(key, expected)
    if isinstance(value, dict):  # transformers may store an AddedToken as a dict
      value = value.get("content")
    if value != expected:
      raise ValueError(f"{where} sets {key}={value!r}; only BERT's {expected!r} is supported")
  added = config.get("added_tokens_decoder") or {}
  extra = sorted(v.get("content") for v in added.values() if v.get("content") not in SPECIAL_TOKENS)
  if extra:
    raise ValueError(f"{where} adds tokens {extra}; only BERT's five special tokens are supported")


def _check_texts(texts: Sequence[Any], name: str) -> None:
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise TypeError(f"{name}[{i}] is {type(t).__name__}, expected str")


# -------------------------------------------------------------------------------------------------


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

  def _build_engine(self) -> tokenizers.Tokenizer:
    engine = tokenizers.Tokenizer(
      models.WordPiece(
        self._ids,
        unk_token=UNK,
        continuing_subword_prefix=CONTINUATION,
        max_input_chars_per_word=MAX_WORD_CHARS,
      )
    )
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
    path = os.fspath(path)
    what = f"tokenizer file {path!r}"
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{what} does not exist; expected a Hugging Face tokenizer.json")
    spec = _read_json(path, "tokenizer file")
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict):
      raise ValueError(f"{what} has no 'model' section; expected a Hugging Face tokenizer.json")
    if model.get("type") != "WordPiece":
      raise ValueError(f"{what} holds a {model.get('type')!r} model; expected a BERT WordPiece tokenizer")
    expected = {
      "continuing_subword_prefix": CONTINUATION,
      "unk_token": UNK,
      "max_input_chars_per_word": MAX_WORD_CHARS,
    }
    for key, value in expected.items():
      if model.get(key, value) != value:
        raise ValueError(f"{what} sets {key}={model[key]!r}; BERT's WordPiece uses {value!r}")
    norm = spec.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer" or not norm.get("clean_text", True):
      raise ValueError(
        f"{what} has normalizer {norm.get('type')!r}; expected BERT's (BertNormalizer, clean_text)"
      )
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "BertPreTokenizer":
      raise ValueError(f"{what} has pre-tokenizer {pre.get('type')!r}; expected BertPreTokenizer")
    by_id = sorted((i, t) for t, i in model["vocab"].items())
    if [i for i, _ in by_id] != list(range(len(by_id))):
      raise ValueError(f"{what}: vocab ids are not 0..{len(by_id) - 1} without gaps")
    extra = sorted(
      t["content"]
      for t in spec.get("added_tokens") or []
      if t["content"] not in SPECIAL_TOKENS or model["vocab"].get(t["content"]) != t["id"]
    )
    if extra:
      raise ValueError(
        f"{what} adds tokens {extra}; only BERT's five special tokens (with their vocab ids) are supported"
      )
    return cls(
      [t for _, t in by_id],
      lowercase=norm.get("lowercase", True),
      strip_accents=norm.get("strip_accents"),
      split_chinese_chars=norm.get("handle_chinese_chars", True),
      source=what,
    )

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
    config: dict[str, Any] = {}
    if os.path.isfile(config_path):
      config = _read_json(config_path, "tokenizer config")
      if not isinstance(config, dict):
        raise ValueError(f"tokenizer config {config_path!r} is not a JSON object")
      _check_config(config, config_path)
    max_len = config.get("model_max_length")
    # transformers writes a huge sentinel (int(1e30)) for "no limit".
    max_len = max_len if isinstance(max_len, int) and 0 < max_len < 1_000_000 else None
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

  def _encode_many(self, inputs: list, add_special_tokens: bool) -> list[tokenizers.Encoding]:
    try:
      return self._engine.encode_batch(inputs, add_special_tokens=add_special_tokens)
    except TypeError:
      # The caller checked the types, so this is a lone surrogate: rare enough to retry them all.
      fixed = [
        tuple(map(_without_surrogates, x)) if isinstance(x, tuple) else _without_surrogates(x) for x in inputs
      ]
      return self._engine.encode_batch(fixed, add_special_tokens=add_special_tokens)

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
    self, texts: list[str], pairs: list[str] | None, max_length: int | None, add_special_tokens: bool = True
  ) -> list[tokenizers.Encoding]:
    if add_special_tokens:
      _ = (self.cls_id, self.sep_id)  # fails early, naming the vocab, if either is missing
    texts = [self._prepare(t) for t in texts]
    if pairs is not None:
      pairs = [self._prepare(t) for t in pairs]
    encodings = self._encode_many(texts if pairs is None else list(zip(texts, pairs)), add_special_tokens)
    overlong = [] if max_length is None else [i for i, enc in enumerate(encodings) if len(enc) > max_length]
    if overlong:
      # Each segment alone, cut to its share, then the same template as the untruncated rows.
      budget = max_length - ((2 if pairs is None else 3) if add_special_tokens else 0)
      firsts = self._encode_many([texts[i] for i in overlong], add_special_tokens=False)
      seconds = (
        [None] * len(overlong)
        if pairs is None
        else self._encode_many([pairs[i] for i in overlong], add_special_tokens=False)
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
    model_max_length) is BERT's longest-first for pairs.
    """
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
    padding = "longest" if padding is True else padding
    if padding not in PADDING_CHOICES:
      raise ValueError(f"padding must be one of {PADDING_CHOICES}, got {padding!r}")
    pad = padding not in (False, "do_not_pad")
    if pad_to_multiple_of is not None and (not pad or int(pad_to_multiple_of) < 1):
      raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r} needs padding and a positive int")
    limit = self._max_length(max_length, pairs is not None, True)
    if padding == "max_length" and limit is None:
      raise ValueError('padding="max_length" needs max_length (or a tokenizer with model_max_length)')

    encodings = self._encode_batch(texts, pairs, limit if truncation else None)
    if return_offsets:
      segments = [(t,) for t in texts] if pairs is None else list(zip(texts, pairs))
      offset_rows = [_offsets_over_marks(e, seg) for e, seg in zip(encodings, segments)]
    if not pad:
      out: dict[str, Any] = {
        "input_ids": [e.ids for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
      }
      if return_offsets:
        out["offsets"] = offset_rows
      return out

    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    longest = int(lengths.max(initial=0))
    width = limit if padding == "max_length" else longest
    if longest > width:
      raise ValueError(
        f"example {int(np.argmax(lengths))} has {longest} tokens, more than max_length={width}; "
        "allow truncation"
      )
    if pad_to_multiple_of:
      width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    valid = np.arange(width)[None, :] < lengths[:, None]
    total = int(lengths.sum())

    def fill(rows: Iterator[list[int]], value: int) -> np.ndarray:
      arr = np.full((len(encodings), width), value, dtype=np.int32)
      # Boolean-mask assignment fills row-major: the order of the concatenated rows.
      arr[valid] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=total)
      return arr

    # A vocab without [PAD] serves batches that need no padding.
    pad_id = self.pad_id if (lengths < width).any() else 0
    out = {
      "input_ids": fill((e.ids for e in encodings), pad_id),
      "token_type_ids": fill((e.type_ids for e in encodings), 0),
      "attention_mask": valid.astype(np.int32),
    }
    if return_offsets:
      offsets = np.zeros((len(encodings), width, 2), dtype=np.int32)
      flat = itertools.chain.from_iterable(itertools.chain.from_iterable(offset_rows))
      offsets[valid] = np.fromiter(flat, dtype=np.int32, count=2 * total).reshape(total, 2)
      out["offsets"] = offsets
    return out

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
    directory = os.fspath(directory)
    config: dict[str, Any] = {
      "tokenizer_class": "BertTokenizer",
      "do_lower_case": self.lowercase,
      "strip_accents": self.strip_accents,
      "tokenize_chinese_chars": self.split_chinese_chars,
      "do_basic_tokenize": True,
      "clean_up_tokenization_spaces": True,
    }
    names = {PAD: "pad_token", UNK: "unk_token", CLS: "cls_token", SEP: "sep_token", MASK: "mask_token"}
    config.update({key: tok for tok, key in names.items() if tok in self._ids})
    if self.model_max_length is not None:
      config["model_max_length"] = self.model_max_length
    write_text(os.path.join(directory, "vocab.txt"), "".join(t + "\n" for t in self._vocab))
    write_json(os.path.join(directory, "tokenizer_config.json"), config)

  def __getstate__(self) -> dict[str, Any]:
    # Rebuilt when unpickled (e.g. in data-loader workers) rather than serialising the engine.
    state = dict(self.__dict__)
    del state["_engine"]
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._engine = self._build_engine()

  def __repr__(self) -> str:
    return (
      f"Tokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
      f"strip_accents={self.strip_accents}, source={self._source})"
    )


# -------------------------------------------------------------------------------------------------
# Training.


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
