"""Benchmark cases ("base:8x128" x forward/train) and the model FLOPs each peer computes for them.

Standard library only: the driver and the report use it; workers get cases as plain dicts.
"""

from __future__ import annotations

import dataclasses
import math
import re

MODES = ("forward", "train")
VOCAB_SIZE = 30522
MAX_POSITIONS = 512
MASK_RATE = 0.15  # as worker_io.MASK_RATE: MLM targets per sequence = ceil(0.15 x length)
# Variant names besides configs/common.py VARIANTS and its explicit "L-6_H-384_A-12_I-1536" spelling.
ALIASES = {"minilm": "L-6_H-384_A-12_I-1536"}  # all-MiniLM-L6-v2's shape

_SPEC = re.compile(r"^(?P<variant>[^:]+):(?P<batch>\d+)x(?P<length>\d+)(?::(?P<mode>[a-z]+))?$")


@dataclasses.dataclass(frozen=True)
class Case:
  mode: str
  variant: str
  sizes: dict  # num_layers, hidden_size, num_heads, mlp_dim
  batch: int
  length: int

  @property
  def id(self) -> str:
    return f"{self.mode}/{self.variant}/{self.batch}x{self.length}"

  @property
  def tokens(self) -> int:
    return self.batch * self.length


def parse_cases(spec: str, modes, variant_sizes) -> list[Case]:
  """ "base:8x128,minilm:32x128:forward" -> one Case per item and mode (an item's own :mode wins).

  variant_sizes(name) -> sizes dict (configs.common.variant_sizes): the one table of model variants."""
  cases = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    m = _SPEC.match(item)
    if not m:
      raise ValueError(
        f"--cases item {item!r}: expected VARIANT:BATCHxLENGTH[:MODE], "
        "e.g. base:8x128 or minilm:32x128:forward"
      )
    variant, batch, length = m.group("variant"), int(m.group("batch")), int(m.group("length"))
    if batch < 1 or length < 1:
      raise ValueError(f"--cases item {item!r}: batch and length must be positive")
    if length > MAX_POSITIONS:
      raise ValueError(f"--cases item {item!r}: length {length} exceeds BERT's {MAX_POSITIONS} positions")
    try:
      sizes = variant_sizes(ALIASES.get(variant, variant))
    except ValueError as e:
      raise ValueError(f"--cases item {item!r}: {e} (or one of {sorted(ALIASES)})") from None
    item_modes = [m.group("mode")] if m.group("mode") else list(modes)
    for mode in item_modes:
      if mode not in MODES:
        raise ValueError(f"--cases item {item!r}: unknown mode {mode!r}; expected one of {list(MODES)}")
      case = Case(mode, variant, dict(sizes), batch, length)
      if case.id in {c.id for c in cases}:
        raise ValueError(f"--cases: {case.id} appears twice")
      cases.append(case)
  if not cases:
    raise ValueError("--cases is empty; give at least one VARIANT:BATCHxLENGTH")
  return cases


def num_predictions(length: int) -> int:
  return max(1, math.ceil(MASK_RATE * length))


def logits_positions(peer: str, case: Case, mlm_positions: str) -> int:
  """Positions per sequence at which the peer computes vocabulary logits in the train step: bert_jax
  gathers the masked ones first (BERT's pretraining) unless told otherwise; HuggingFace's models compute
  every position."""
  if peer.startswith("bert_jax") and mlm_positions == "masked":
    return num_predictions(case.length)
  return case.length


def encoder_flops(sizes: dict, batch: int, length: int) -> float:
  """Forward FLOPs of the encoder: 2 x matmul params x tokens + attention's score and context matmuls
  (4 x length x hidden per token and layer). Embedding lookups, LayerNorm, GELU and softmax are not
  counted (they are memory-bound, and the usual MFU convention leaves them out)."""
  h, layers, mlp = sizes["hidden_size"], sizes["num_layers"], sizes["mlp_dim"]
  tokens = batch * length
  matmul_params = layers * (4 * h * h + 2 * h * mlp)
  return 2.0 * matmul_params * tokens + 4.0 * length * h * layers * tokens


def model_flops(peer: str, case: Case, mlm_positions: str, vocab_size: int = VOCAB_SIZE) -> float:
  """FLOPs of one call as the peer computes it. forward: encoder + pooler. train: 3 x the forward of
  encoder + MLM head (transform H x H and tied decoder H x V at each logits position); no pooler."""
  h = case.sizes["hidden_size"]
  if case.mode == "forward":
    return encoder_flops(case.sizes, case.batch, case.length) + 2.0 * case.batch * h * h
  positions = case.batch * logits_positions(peer, case, mlm_positions)
  head = 2.0 * positions * (h * h + h * vocab_size)
  return 3.0 * (encoder_flops(case.sizes, case.batch, case.length) + head)


def ceiling_shapes(cases: list[Case], accelerator: bool = False) -> list[tuple[int, int, int]]:
  """Square 1024 and 2048 (and 4096, 8192 on an accelerator, which small shapes do not fill), then each
  case's own feed-forward matmul [B*L, H] x [H, mlp]."""
  shapes = [(1024, 1024, 1024), (2048, 2048, 2048)]
  if accelerator:
    shapes += [(4096, 4096, 4096), (8192, 8192, 8192)]
  for case in cases:
    shape = (case.tokens, case.sizes["hidden_size"], case.sizes["mlp_dim"])
    if shape not in shapes:
      shapes.append(shape)
  return shapes
