"""Character-level rules of BERT's basic tokenization, as pieces for the `tokenizers` engine.

Character classes come from Python's `unicodedata`, the tables the reference reads; from them the
engine's normalizer (drop control characters, blanks to spaces, NFC, lower-case, strip accents) and
pre-tokenizer (split at whitespace, isolate punctuation and CJK ideographs) are built. Two fixes run
in Python before the engine sees a text: the word-final capital sigma, and lone surrogates.

Why not the engine's `BertNormalizer` + `BertPreTokenizer`: on tokenizers 0.23 they disagree with
the reference on about 830k code points (they keep unassigned code points; their Unicode tables
predate many punctuation marks, combining marks and format characters; they miss part of CJK
Extension E), they never NFC-compose (a decomposed "e" + U+0301 stays two characters in a cased
model) and they lower-case a word-final Greek capital sigma to "σ" where str.lower() gives "ς".
So the pipeline is built from the engine's primitive steps (regex replace, NFC, NFD, lowercase,
regex split) with character classes computed from Python's `unicodedata`, and the final sigma is
settled in Python before the engine sees the text. What still differs: a few code points whose
NFC/NFD data changed between the engine's Unicode version and Python's (U+11938, U+1DF6 on Python 3.11).

Printable ASCII, where none of those steps but lower-casing changes anything (`_is_plain`), takes a
lean pipeline instead: lower-cased in Python, split at spaces and ASCII punctuation, no normalizer.
The full pipeline alone runs at about 0.85x the stock one on English and 1.15x on Chinese; with the
lean one, English runs faster than the stock pipeline (experiments/benchmarks/README.md).
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from collections.abc import Iterable, Sequence

import tokenizers
from tokenizers import normalizers, pre_tokenizers

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

# All non-alphanumeric printable ASCII, which the reference counts as punctuation ("$" and "^" included).
ASCII_PUNCT = ((33, 47), (58, 64), (91, 96), (123, 126))


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
  punct = _merge(with_category(lambda c: c[0] == "P"), ASCII_PUNCT)
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


def _is_plain(text: str) -> bool:
  """Printable ASCII (no control characters, no tab or newline): text on which the normalizer's
  cleaning, NFC, accent stripping and the final-sigma and surrogate fixes change nothing, and
  whose only whitespace is " ". `isascii` costs nothing in CPython; `isprintable` is one C pass."""
  return text.isascii() and text.isprintable()


def _build_plain_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
  """The pre-tokenizer for plain text (see `_is_plain`), which needs no normalizer but lower-casing.

  On such text it splits exactly as `_build_pre_tokenizer`'s, without the Unicode-wide classes: there
  are no ideographs, and " " is the only whitespace. With no normalizer, the engine does about half
  the work on such lines (experiments/benchmarks/README.md, "The exact tokenizer's speed").
  """
  return pre_tokenizers.Sequence(
    [
      pre_tokenizers.WhitespaceSplit(),
      pre_tokenizers.Split(tokenizers.Regex(_regex_class(ASCII_PUNCT)), behavior="isolated"),
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
