"""Pretraining objectives: name -> loss_and_metrics(outputs, batch). Models know no losses.

Batches follow BERT's pretraining features: `input_ids`, `attention_mask`, `token_type_ids`,
`masked_positions` (B, P), `masked_ids` (B, P), `masked_weights` (B, P; 0 for padding predictions)
and, for NSP, `nsp_labels` (B,; 0 = segment B follows A, 1 = random).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Objective = Callable[[dict, dict], tuple[jax.Array, dict]]
_REGISTRY: dict[str, Objective] = {}


def register(name: str):
  def wrap(fn: Objective) -> Objective:
    _REGISTRY[name] = fn
    return fn

  return wrap


def get(name: str) -> Objective:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown objective {name!r}; registered objectives are {sorted(_REGISTRY)}") from None


def uses_nsp(name: str) -> bool:
  return name in ("mlm_nsp",)


def _mlm(outputs, batch):
  logits = outputs["mlm_logits"].astype(jnp.float32)  # (B, P, V): logits at the masked positions only
  weights = batch["masked_weights"].astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["masked_ids"])
  count = jnp.maximum(weights.sum(), 1.0)
  loss = (losses * weights).sum() / count
  accuracy = ((logits.argmax(-1) == batch["masked_ids"]) * weights).sum() / count
  return loss, {"mlm_loss": loss, "mlm_accuracy": accuracy}


@register("mlm")
def mlm(outputs, batch):
  loss, metrics = _mlm(outputs, batch)
  return loss, dict(metrics, loss=loss)


@register("mlm_nsp")
def mlm_nsp(outputs, batch):
  mlm_loss, metrics = _mlm(outputs, batch)
  logits = outputs["nsp_logits"].astype(jnp.float32)
  nsp_loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["nsp_labels"]).mean()
  accuracy = (logits.argmax(-1) == batch["nsp_labels"]).mean()
  loss = mlm_loss + nsp_loss
  return loss, dict(metrics, loss=loss, nsp_loss=nsp_loss, nsp_accuracy=accuracy)
