"""The vocabulary side of a tokenizer: BERT's special tokens and WordPiece settings, and the files a
tokenizer is read from (vocab.txt, tokenizer.json, tokenizer_config.json) and written to, each
checked so that a wrong file fails with what it is and what was expected."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from bert_jax.files import write_json, write_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"
MAX_WORD_CHARS = 100


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
  lines = [line.removesuffix("\r") for line in text.split("\n")]
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


def _read_tokenizer_config(path: str) -> tuple[dict[str, Any], int | None]:
  """A folder's tokenizer_config.json, checked ({} when there is none), and its model_max_length."""
  config: dict[str, Any] = {}
  if os.path.isfile(path):
    config = _read_json(path, "tokenizer config")
    if not isinstance(config, dict):
      raise ValueError(f"tokenizer config {path!r} is not a JSON object")
    _check_config(config, path)
  max_len = config.get("model_max_length")
  # transformers writes a huge sentinel (int(1e30)) for "no limit".
  max_len = max_len if isinstance(max_len, int) and 0 < max_len < 1_000_000 else None
  return config, max_len


def _tokenizer_json_settings(path: str) -> dict[str, Any]:
  """Tokenizer's arguments (vocab, casing, source) from a Hugging Face tokenizer.json, checked to be
  BERT's WordPiece; its padding and truncation are not taken."""
  what = f"tokenizer file {path!r}"
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} does not exist; expected a Hugging Face tokenizer.json")
  spec = _read_json(path, "tokenizer file")
  model = spec.get("model") if isinstance(spec, dict) else None
  if not isinstance(model, dict):
    # A ValueError like every other fault in the file: callers catch one kind for a bad tokenizer.json.
    raise ValueError(f"{what} has no 'model' section; expected a Hugging Face tokenizer.json")  # noqa: TRY004
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
  return {
    "vocab": [t for _, t in by_id],
    "lowercase": norm.get("lowercase", True),
    "strip_accents": norm.get("strip_accents"),
    "split_chinese_chars": norm.get("handle_chinese_chars", True),
    "source": what,
  }


def _write_vocab_folder(
  directory: str,
  vocab: Sequence[str],
  *,
  lowercase: bool,
  strip_accents: bool,
  split_chinese_chars: bool,
  model_max_length: int | None,
) -> None:
  """Writes vocab.txt + tokenizer_config.json: a folder transformers' BertTokenizer loads as is."""
  config: dict[str, Any] = {
    "tokenizer_class": "BertTokenizer",
    "do_lower_case": lowercase,
    "strip_accents": strip_accents,
    "tokenize_chinese_chars": split_chinese_chars,
    "do_basic_tokenize": True,
    "clean_up_tokenization_spaces": True,
  }
  names = {PAD: "pad_token", UNK: "unk_token", CLS: "cls_token", SEP: "sep_token", MASK: "mask_token"}
  present = set(vocab)
  config.update({key: tok for tok, key in names.items() if tok in present})
  if model_max_length is not None:
    config["model_max_length"] = model_max_length
  write_text(os.path.join(directory, "vocab.txt"), "".join(t + "\n" for t in vocab))
  write_json(os.path.join(directory, "tokenizer_config.json"), config)
