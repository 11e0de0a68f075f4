"""Attention kernels behind one interface, chosen by name (`BertConfig.attention`).

Every kernel takes queries, keys and values shaped (batch, length, heads, head_dim), a boolean
mask broadcastable to (batch, heads, q_length, kv_length) where True means "may attend", and an
optional dropout on the attention probabilities; it returns the context (batch, q_length, heads,
head_dim). Variants for ablations register here so the encoder never changes.
"""

from __future__ import annotations

from typing import Callable, Protocol

import jax
import jax.numpy as jnp


class AttentionFn(Protocol):
  def __call__(
    self,
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: jax.Array | None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array: ...


_REGISTRY: dict[str, AttentionFn] = {}


def register(name: str) -> Callable[[AttentionFn], AttentionFn]:
  def wrap(fn: AttentionFn) -> AttentionFn:
    if name in _REGISTRY:
      raise ValueError(f"attention {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn

  return wrap


def get(name: str) -> AttentionFn:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown attention {name!r}; registered attentions are {sorted(_REGISTRY)}") from None


def names() -> list[str]:
  return sorted(_REGISTRY)


def padding_mask(attention_mask: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
  """(batch, kv_length) 1/0 padding mask -> boolean (batch, 1, 1 or q_length, kv_length).

  Every query position, padded or not, attends to all real tokens: bidirectional attention,
  exactly as BERT (and HuggingFace's BertModel) computes it. With `segment_ids` (packed
  sequences), a token attends only to real tokens of its own segment.
  """
  keys = attention_mask.astype(bool)[:, None, None, :]
  if segment_ids is None:
    return keys
  same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
  return keys & same


@register("dense")
def dense_attention(query, key, value, mask, *, dropout_rate=0.0, dropout_rng=None, deterministic=True):
  """The reference: softmax(Q Kᵀ / sqrt(d) + mask) V over all positions at once."""
  depth = query.shape[-1]
  query = query / jnp.sqrt(depth).astype(query.dtype)
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key)
  # Softmax in float32 whatever the compute dtype: bf16 logits lose the small differences
  # between scores that decide the attention pattern.
  scores = scores.astype(jnp.float32)
  if mask is not None:
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  probs = probs.astype(value.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, value)
