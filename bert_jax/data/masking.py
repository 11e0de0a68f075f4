"""Masked-language-model masking: which positions to predict and what the model sees there.

Three ways to choose the positions, as `MaskingConfig.mode` says:

- "token" (BERT): positions drawn uniformly without replacement from the maskable tokens.
- "whole_word" (BERT's whole-word masking): a word is a start piece and the `##` pieces after it;
  words are taken in random order, each with all of its pieces, and a word that would push the
  count over the budget is skipped, as the reference does.
- "span" (SpanBERT): span lengths in words drawn from a geometric distribution truncated to
  1..span_max and renormalized (the reference's `len_distrib`; its paper says "clipped", but the
  mean span of 3.8 words it reports is that of the renormalized distribution, not of one that piles
  the tail onto span_max), each span starting at a random word start, until the budget is spent.

The budget is min(max_predictions, max(1, round(n * rate))) with n the number of maskable
(non-special) tokens. BERT multiplies the rate by the length with [CLS] and [SEP] counted; counting
only what can be masked makes the rate the fraction of text actually masked.

Each chosen position then becomes [MASK] with probability `replace_with_mask`, a random token with
probability `replace_with_random`, and stays itself otherwise. BERT decides this per position, also
in whole-word mode (its loop draws once per index), and so do "token" and "whole_word" here;
SpanBERT decides once per span (all of a span is [MASK], random or kept), and so does "span".
Random replacements are drawn uniformly from the vocabulary without the special tokens (BERT draws
from the whole vocabulary, [CLS] and [PAD] included, which only teaches the model noise).

Static versus dynamic masking is only a matter of which random generator the caller passes:
`masking_rng(seed, index)` gives instance `index` the same masks every time it is read (BERT's
static masking, as if written to disk once), `masking_rng(seed, index, epoch)` gives it fresh masks
each epoch (RoBERTa's dynamic masking). Everything here is deterministic given the generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

MODES = ("token", "whole_word", "span")
# Never chosen for prediction and never drawn as a random replacement. [UNK] is ordinary text to
# BERT: it is masked and predicted like any word.
NEVER_MASKED = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION = "##"

# First word of every seed sequence built here, so that masking streams never coincide with the
# instance-creation streams of the same user seed (SeedSequence ignores trailing zeros, so tags
# and fixed-length keys are what keep (seed, index) and (seed, index, 0) apart).
_STATIC_TAG = 0x6D61736B  # "mask"
_DYNAMIC_TAG = 0x64796E6D  # "dynm"


def _check_int(name: str, value: Any, minimum: int, why: str = "") -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}={value!r} is a {type(value).__name__}; expected an integer >= {minimum}{why}")
  if value < minimum:
    raise ValueError(f"{name}={value} is too small; expected an integer >= {minimum}{why}")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """How many positions to predict, how to choose them, and what to put there.

  rate: fraction of the maskable tokens to predict. max_predictions: fixed number of prediction
  slots per sequence (a hard cap). replace_with_mask / replace_with_random: probabilities of
  [MASK] / a random token at a chosen position (the rest keep their token). span_p, span_max: the
  geometric span-length distribution of "span" mode, in words.
  """

  rate: float = 0.15
  max_predictions: int = 20
  mode: str = "token"
  replace_with_mask: float = 0.8
  replace_with_random: float = 0.1
  span_p: float = 0.2
  span_max: int = 10

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"MaskingConfig.mode={self.mode!r}; expected one of {list(MODES)}")
    if not 0.0 < self.rate <= 1.0:
      raise ValueError(f"MaskingConfig.rate={self.rate!r}; expected a fraction in (0, 1]")
    _check_int("MaskingConfig.max_predictions", self.max_predictions, 1)
    for name in ("replace_with_mask", "replace_with_random"):
      value = getattr(self, name)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"MaskingConfig.{name}={value!r}; expected a probability in [0, 1]")
    if self.replace_with_mask + self.replace_with_random > 1.0 + 1e-9:
      raise ValueError(
        f"MaskingConfig.replace_with_mask + replace_with_random = {self.replace_with_mask} + "
        f"{self.replace_with_random} > 1; expected at most 1 (the rest keep their token)"
      )
    if not 0.0 < self.span_p <= 1.0:
      raise ValueError(f"MaskingConfig.span_p={self.span_p!r}; expected a geometric parameter in (0, 1]")
    _check_int("MaskingConfig.span_max", self.span_max, 1, " (words)")

  def span_length_pmf(self) -> np.ndarray:
    """P(span of l words) for l = 1..span_max (entry l - 1): Geometric(span_p) truncated and renormalized."""
    lengths = np.arange(1, self.span_max + 1)
    weights = self.span_p * (1.0 - self.span_p) ** (lengths - 1)
    return weights / weights.sum()

  def num_predictions(self, num_maskable: int) -> int:
    """The budget for a sequence with `num_maskable` maskable tokens (0 when there are none)."""
    if num_maskable <= 0:
      return 0
    # Halves round up: Python's round() would send 2.5 to 2 but 3.5 to 4.
    wanted = int(np.floor(num_maskable * self.rate + 0.5))
    return min(self.max_predictions, max(1, wanted), num_maskable)


def vocab_lookups(vocab: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(is_special, is_continuation) boolean arrays over token ids for a WordPiece vocab.

  is_special marks NEVER_MASKED; is_continuation marks `##` pieces, which whole-word and span
  masking keep with the piece before them.
  """
  is_special = np.array([t in NEVER_MASKED for t in vocab], dtype=bool)
  is_continuation = np.array([t.startswith(CONTINUATION) for t in vocab], dtype=bool)
  return is_special, is_continuation


def masking_rng(seed: int, index: int, epoch: int | None = None) -> np.random.Generator:
  """The generator for masking instance `index`: static (epoch None) or fresh for each epoch."""
  _check_int("masking_rng seed", seed, 0)
  _check_int("masking_rng index", index, 0)
  if epoch is None:
    key = [_STATIC_TAG, int(seed), int(index)]
  else:
    _check_int("masking_rng epoch", epoch, 0)
    key = [_DYNAMIC_TAG, int(seed), int(index), int(epoch)]
  return np.random.default_rng(np.random.SeedSequence(key))


def _lookup(table: Any, vocab_size: int, name: str) -> np.ndarray:
  """A boolean array over the vocab from a boolean array or a collection of ids."""
  if isinstance(table, np.ndarray) and table.dtype == bool:
    if table.shape != (vocab_size,):
      raise ValueError(f"{name} has shape {table.shape}; expected a boolean array of shape ({vocab_size},)")
    return table
  ids = np.asarray(sorted(table) if isinstance(table, (set, frozenset)) else list(table), dtype=np.int64)
  if ids.ndim != 1:
    raise ValueError(f"{name} must be token ids or a boolean array over the vocab; got shape {ids.shape}")
  bad = ids[(ids < 0) | (ids >= vocab_size)]
  if bad.size:
    raise ValueError(f"{name} holds id {int(bad[0])}, outside the vocabulary of {vocab_size} ids")
  out = np.zeros(vocab_size, dtype=bool)
  out[ids] = True
  return out


def _words(maskable: np.ndarray, continues: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(first position, length, run) of each word among the maskable positions.

  A run is a stretch of maskable tokens between special tokens; a word never crosses a run, so a
  `##` piece just after [SEP] starts a word of its own rather than joining the word before [SEP].
  Without `continues` every maskable token is a word.
  """
  previous = np.concatenate([[False], maskable[:-1]])
  starts = maskable.copy()
  if continues is not None:
    starts &= ~(continues & previous)
  first = np.flatnonzero(starts)
  word_of_pos = np.cumsum(starts) - 1
  lengths = np.bincount(word_of_pos[maskable], minlength=len(first)).astype(np.int64)
  runs = (np.cumsum(maskable & ~previous) - 1)[first]
  return first, lengths, runs


def _expand(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """The positions start, start + 1, ..., start + count - 1 of every (start, count), concatenated."""
  counts = np.asarray(counts, dtype=np.int64)
  offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
  return np.repeat(np.asarray(starts, dtype=np.int64), counts) + offsets


def _take_words(order: np.ndarray, lengths: np.ndarray, budget: int) -> np.ndarray:
  """Words in `order`, each whole, skipping any that would overflow the budget (BERT's rule)."""
  taken, count = [], 0
  sizes = lengths.tolist()
  for w in order.tolist():
    if count >= budget:
      break
    if count + sizes[w] <= budget:
      taken.append(w)
      count += sizes[w]
  return np.array(taken, dtype=np.int64)


def _choose_spans(
  lengths: np.ndarray, runs: np.ndarray, budget: int, config: MaskingConfig, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
  """SpanBERT's spans as (first word, words placed, words drawn).

  A span starts at a random unmasked word that fits the remaining budget and grows to the right,
  one whole word at a time, until it has its drawn length or reaches the end of its run, an
  already masked word, or a word that would overflow the budget; so every span but those cut short
  by such an edge has exactly its drawn length. Each round places at least one word, so the loop
  ends after at most `budget` rounds.
  """
  cdf = np.cumsum(config.span_length_pmf())
  masked = np.zeros(len(lengths), dtype=bool)
  sizes, run_of = lengths.tolist(), runs.tolist()
  spans, count = [], 0
  while count < budget:
    open_words = np.flatnonzero(~masked & (lengths <= budget - count))
    if open_words.size == 0:
      break
    # Inverse-CDF draw; min() guards the last bin against cdf[-1] rounding just below 1.
    drawn = min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1) + 1
    first = int(open_words[rng.integers(open_words.size)])
    w = first
    while (
      w - first < drawn
      and w < len(sizes)
      and not masked[w]
      and run_of[w] == run_of[first]
      and count + sizes[w] <= budget
    ):
      masked[w] = True
      count += sizes[w]
      w += 1
    spans.append((first, w - first, drawn))
  return spans


def _random_tokens(n: int, special: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """`n` ids uniform over the non-special vocabulary (rejection: specials are a handful of ids)."""
  out = rng.integers(0, len(special), size=n)
  redo = special[out]
  while redo.any():
    out[redo] = rng.integers(0, len(special), size=int(redo.sum()))
    redo = special[out]
  return out


def _checked_ids(
  tokens: Sequence[int] | np.ndarray, vocab_size: int, mask_id: int, max_seq_length: int | None
) -> np.ndarray:
  """The tokens as an int64 array, after checking they are ids of this vocabulary that fit max_seq_length."""
  ids = np.asarray(tokens)
  if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
    raise ValueError(
      f"tokens must be a 1-D sequence of integer token ids; got shape {ids.shape}, dtype {ids.dtype}"
    )
  ids = ids.astype(np.int64)
  if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
    bad = int(ids[(ids < 0) | (ids >= vocab_size)][0])
    raise ValueError(f"tokens hold id {bad}, outside the vocabulary of {vocab_size} ids")
  if not 0 <= mask_id < vocab_size:
    raise ValueError(f"mask_id={mask_id} is outside the vocabulary of {vocab_size} ids")
  if max_seq_length is not None and len(ids) > max_seq_length:
    raise ValueError(f"tokens have {len(ids)} ids, more than max_seq_length={max_seq_length}")
  return ids


def _continuations(
  ids: np.ndarray, config: MaskingConfig, is_continuation: np.ndarray | None, vocab_size: int
) -> np.ndarray | None:
  """Which positions hold a `##` piece; None in "token" mode, which does not group pieces into words."""
  if config.mode == "token":
    return None
  if is_continuation is None:
    raise ValueError(
      f"mode={config.mode!r} needs is_continuation (a boolean array over the vocab marking ## pieces)"
    )
  return _lookup(is_continuation, vocab_size, "is_continuation")[ids]


def _choose_positions(
  first: np.ndarray,
  lengths: np.ndarray,
  runs: np.ndarray,
  budget: int,
  config: MaskingConfig,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """The positions to predict; for each, the index of the group that shares one replacement decision;
  in "span" mode the spans' rows (first position, one past the last, words drawn), else None."""
  if config.mode == "token":
    positions = rng.permutation(first)[:budget]
    return positions, np.arange(len(positions)), None
  if config.mode == "whole_word":
    chosen = _take_words(rng.permutation(len(first)), lengths, budget)
    positions = _expand(first[chosen], lengths[chosen])
    # BERT draws [MASK]/random/keep per position even when whole words are masked.
    return positions, np.arange(len(positions)), None
  spans = _choose_spans(lengths, runs, budget, config, rng)
  w = np.array([sp[0] for sp in spans], dtype=np.int64)
  placed = np.array([sp[1] for sp in spans], dtype=np.int64)
  span_start = first[w] if spans else np.zeros(0, np.int64)
  span_stop = first[w + placed - 1] + lengths[w + placed - 1] if spans else np.zeros(0, np.int64)
  positions = _expand(span_start, span_stop - span_start)
  group = np.repeat(np.arange(len(spans)), span_stop - span_start)
  drawn = [sp[2] for sp in spans]
  rows = np.stack([span_start, span_stop, drawn], axis=1).astype(np.int32).reshape(-1, 3)
  return positions, group, rows


def _replace(
  ids: np.ndarray,
  positions: np.ndarray,
  group: np.ndarray,
  config: MaskingConfig,
  mask_id: int,
  special: np.ndarray,
  rng: np.random.Generator,
) -> np.ndarray:
  """A copy of ids with the chosen positions turned to [MASK], a random token, or kept, one draw per group."""
  input_ids = ids.copy()
  draw = rng.random(int(group.max()) + 1 if len(group) else 0)[group]
  input_ids[positions[draw < config.replace_with_mask]] = mask_id
  randomized = positions[
    (draw >= config.replace_with_mask) & (draw < config.replace_with_mask + config.replace_with_random)
  ]
  input_ids[randomized] = _random_tokens(len(randomized), special, rng)
  return input_ids


def _prediction_slots(ids: np.ndarray, positions: np.ndarray, slots: int) -> dict[str, np.ndarray]:
  """masked_positions, masked_ids and masked_weights: the predictions in ascending position, then empty slots."""
  positions = np.sort(positions)
  n = len(positions)
  masked_positions = np.zeros(slots, dtype=np.int32)
  masked_ids = np.zeros(slots, dtype=np.int32)
  masked_weights = np.zeros(slots, dtype=np.float32)
  masked_positions[:n] = positions
  masked_ids[:n] = ids[positions]
  masked_weights[:n] = 1.0
  return {"masked_positions": masked_positions, "masked_ids": masked_ids, "masked_weights": masked_weights}


def mask_instance(
  tokens: Sequence[int] | np.ndarray,
  *,
  config: MaskingConfig,
  vocab_size: int,
  mask_id: int,
  special_ids: Iterable[int] | np.ndarray,
  rng: np.random.Generator,
  is_continuation: np.ndarray | None = None,
  max_seq_length: int | None = None,
  pad_id: int = 0,
) -> dict[str, np.ndarray]:
  """Masks one sequence of token ids (specials included, padding allowed).

  special_ids: ids never masked nor drawn as replacements (a set of ids or a boolean array over
  the vocab; see `vocab_lookups`); it must hold [CLS], [SEP] and [PAD] for BERT's behaviour.
  is_continuation: boolean array over the vocab marking `##` pieces; required for "whole_word" and
  "span". max_seq_length: pad `input_ids` to this length with `pad_id`.

  Returns `input_ids` (int32), `masked_positions`, `masked_ids` (int32, max_predictions; ascending
  positions, then zeros) and `masked_weights` (float32; 1 for real predictions, 0 for empty slots).
  In "span" mode also `spans` (int32, (num_spans, 3)): first token position, one past the last,
  and the span length in words that was drawn (the placed one is shorter only where an edge, the
  budget or an earlier span cut it), in the order placed: the boundaries SpanBERT's span-boundary
  objective needs.
  """
  if not isinstance(config, MaskingConfig):
    raise TypeError(f"config is {type(config).__name__}; expected a MaskingConfig")
  ids = _checked_ids(tokens, vocab_size, mask_id, max_seq_length)
  special = _lookup(special_ids, vocab_size, "special_ids")
  if special.all():
    raise ValueError("special_ids covers the whole vocabulary; nothing is left to mask or to draw")
  continues = _continuations(ids, config, is_continuation, vocab_size)

  maskable = ~special[ids]
  first, lengths, runs = _words(maskable, continues)
  budget = config.num_predictions(int(maskable.sum()))
  # The rng is drawn in a fixed order (choice of positions, then replacement draws, then random tokens):
  # masked data must stay bit-identical for a given seed.
  positions, group, spans = _choose_positions(first, lengths, runs, budget, config, rng)
  input_ids = _replace(ids, positions, group, config, mask_id, special, rng)

  if max_seq_length is not None:
    input_ids = np.concatenate([input_ids, np.full(max_seq_length - len(ids), pad_id, dtype=np.int64)])
  out = {"input_ids": input_ids.astype(np.int32)} | _prediction_slots(ids, positions, config.max_predictions)
  if spans is not None:
    out["spans"] = spans
  return out


_REQUIRED = ("tokens", "token_type_ids", "input_ids", "masked_positions", "masked_ids", "masked_weights")


def batch_features(instances_masked: Sequence[dict[str, Any]], max_seq_length: int) -> dict[str, np.ndarray]:
  """Stacks masked instances into the model's features, padded to `max_seq_length`.

  Each item is an instance (see bert_jax.data.instances) merged with `mask_instance`'s output:
  `tokens` gives the real length. Returns int32 `input_ids`, `attention_mask`, `token_type_ids`,
  `masked_positions`, `masked_ids`, float32 `masked_weights`; `nsp_labels` when the instances
  carry `pair_label`; `segment_ids` and `position_ids` for packed instances (0 in padding).
  """
  if len(instances_masked) == 0:
    raise ValueError("batch_features got no instances; expected at least one")
  n_rows = len(instances_masked)
  for key in ("pair_label", "segment_ids", "position_ids"):
    have = [key in item for item in instances_masked]
    if any(have) and not all(have):
      raise ValueError(
        f"instance {have.index(False)} has no {key!r} but instance {have.index(True)} has; "
        "expected every instance of a batch to have the same fields"
      )
  first = instances_masked[0]
  slots = len(np.asarray(first.get("masked_positions", ())))
  out = {
    name: np.zeros((n_rows, max_seq_length), dtype=np.int32)
    for name in ("input_ids", "attention_mask", "token_type_ids")
  }
  out["masked_positions"] = np.zeros((n_rows, slots), dtype=np.int32)
  out["masked_ids"] = np.zeros((n_rows, slots), dtype=np.int32)
  out["masked_weights"] = np.zeros((n_rows, slots), dtype=np.float32)
  packed = "segment_ids" in first
  if packed:
    out["segment_ids"] = np.zeros((n_rows, max_seq_length), dtype=np.int32)
    out["position_ids"] = np.zeros((n_rows, max_seq_length), dtype=np.int32)
  if "pair_label" in first:
    out["nsp_labels"] = np.zeros(n_rows, dtype=np.int32)

  for row, item in enumerate(instances_masked):
    missing = [k for k in _REQUIRED if k not in item]
    if missing:
      raise ValueError(
        f"instance {row} lacks {missing}; expected an instance merged with mask_instance's output"
      )
    n = len(item["tokens"])
    if n > max_seq_length:
      raise ValueError(f"instance {row} has {n} tokens, more than max_seq_length={max_seq_length}")
    input_ids = np.asarray(item["input_ids"])
    if len(input_ids) < n:
      raise ValueError(f"instance {row}: input_ids has {len(input_ids)} ids but tokens has {n}")
    for key in ("masked_positions", "masked_ids", "masked_weights"):
      if len(item[key]) != slots:
        raise ValueError(
          f"instance {row}: {key} has {len(item[key])} slots, instance 0 has {slots}; "
          "expected one max_predictions for the whole batch"
        )
    out["input_ids"][row, :n] = input_ids[:n]
    out["attention_mask"][row, :n] = 1
    out["token_type_ids"][row, :n] = item["token_type_ids"]
    out["masked_positions"][row] = item["masked_positions"]
    out["masked_ids"][row] = item["masked_ids"]
    out["masked_weights"][row] = item["masked_weights"]
    if packed:
      out["segment_ids"][row, :n] = item["segment_ids"]
      out["position_ids"][row, :n] = item["position_ids"]
    if "nsp_labels" in out:
      out["nsp_labels"][row] = item["pair_label"]
  return out
