"""Shared config pieces: `parse_arg` for "key=value,..." config arguments and the model variants.

Config files are `get_config(arg)` functions (ml_collections); run them as
`--config=configs/pretrain.py:variant=base,objective=mlm` and override any field with `--config.x=y`.
"""

from __future__ import annotations

import re

import ml_collections

from bert_jax.models.config import BertConfig

# (num_layers, hidden_size): the sizes Google published for BERT (base, large) and its 24 compact
# models ("Well-Read Students Learn Better", Turc et al. 2019). Heads = hidden / 64, MLP = 4 x hidden.
VARIANTS = {
  "tiny": (2, 128),
  "mini": (4, 256),
  "small": (4, 512),
  "medium": (8, 512),
  "base": (12, 768),
  "large": (24, 1024),
}
# Any other size, spelled as in Google's folder names: "L-6_H-384_A-12", or "L6_H384" (A = H / 64).
_EXPLICIT = re.compile(r"^L-?(\d+)_H-?(\d+)(?:_A-?(\d+))?(?:_I-?(\d+))?$")


def variant_sizes(variant: str) -> dict[str, int]:
  if variant in VARIANTS:
    layers, hidden = VARIANTS[variant]
    heads, mlp = hidden // 64, 4 * hidden
  else:
    m = _EXPLICIT.match(variant)
    if not m:
      raise ValueError(
        f"unknown model variant {variant!r}; use one of {list(VARIANTS)} or an explicit "
        "size such as 'L-6_H-384_A-12' (layers, hidden size, heads; optional _I-<mlp dim>)"
      )
    layers, hidden = int(m.group(1)), int(m.group(2))
    heads = int(m.group(3)) if m.group(3) else max(hidden // 64, 1)
    mlp = int(m.group(4)) if m.group(4) else 4 * hidden
  return dict(num_layers=layers, hidden_size=hidden, num_heads=heads, mlp_dim=mlp)


def model_config(variant: str = "base", **overrides) -> ml_collections.ConfigDict:
  """A locked ConfigDict holding every BertConfig field, so a misspelled override fails."""
  values = BertConfig().to_dict()
  values.update(variant_sizes(variant))
  values.update(overrides)
  # Validate now, not at first use (vocab_size 0 means "the tokenizer's", filled in by the runner).
  BertConfig.from_dict(
    dict(values, vocab_size=values["vocab_size"] or 1), source=f"model variant {variant!r}"
  )
  config = ml_collections.ConfigDict(values)
  config.lock()
  return config


def bert_config(model: ml_collections.ConfigDict) -> BertConfig:
  return BertConfig.from_dict(model.to_dict(), source="config.model")


def parse_arg(arg: str | None, **defaults):
  """ "variant=base,steps=10,runlocal" -> ConfigDict with the types of `defaults`.

  A bare word sets a boolean default to True; unknown keys raise, listing the known ones.
  """
  result = ml_collections.ConfigDict(defaults)
  if not arg:
    return result
  for item in arg.split(","):
    if not item:
      continue
    key, sep, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"config argument {key!r} is unknown; known: {sorted(defaults)}")
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      result[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={value!r}: expected true or false")
      result[key] = value.lower() in ("true", "1")
    elif isinstance(default, int):
      result[key] = int(value)
    elif isinstance(default, float):
      result[key] = float(value)
    else:
      result[key] = value
  return result


__all__ = ["VARIANTS", "model_config", "bert_config", "parse_arg", "variant_sizes"]


def optimizer_config(name: str = "adamw", **overrides) -> ml_collections.ConfigDict:
  """Optimizer settings (see bert_jax/optim.py). `bert_adamw` is BERT's own AdamWeightDecayOptimizer (no bias
  correction) with BERT's schedule (warmup from 0, then lr * (1 - t/T)): the paper configs use it. `adamw` is
  optax's bias-corrected AdamW with the `linear` schedule (decay from the peak over the steps after warmup).
  Both: lr 1e-4, betas (0.9, 0.999), eps 1e-6, weight decay 0.01, clipping at global norm 1, 10k warmup steps.
  `lamb` takes its learning rate from the LAMB paper's BERT recipe."""
  values = dict(
    name=name,
    schedule="bert" if name == "bert_adamw" else "linear",  # bert | linear
    learning_rate=1.76e-3 if name == "lamb" else 1e-4,
    warmup_steps=10_000,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    weight_decay=0.01,
    grad_clip=1.0,
    accumulation_steps=1,
    layer_decay=1.0,  # < 1: layer-wise learning-rate decay (fine-tuning; see bert_jax/optim.py)
  )
  unknown = sorted(set(overrides) - set(values) - {"total_steps"})
  if unknown:
    raise ValueError(f"unknown optimizer settings {unknown}; known: {sorted(values)}")
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def mesh_config(
  strategy: str = "dp", data: int = -1, fsdp: int = 1, tensor: int = 1
) -> ml_collections.ConfigDict:
  """The device mesh and sharding strategy (see bert_jax/sharding.py). One axis may be -1: all the
  devices the others leave, so the same config runs on a laptop CPU, one GPU or a pod.

  dcn_*: how many TPU slices (or GPU nodes) each axis spans, for a hybrid multi-slice mesh.
  rules: extra (logical axis, mesh axes) pairs tried before the strategy's table.
  """
  return ml_collections.ConfigDict(
    dict(
      strategy=strategy, data=data, fsdp=fsdp, tensor=tensor, dcn_data=1, dcn_fsdp=1, dcn_tensor=1, rules=()
    )
  )
