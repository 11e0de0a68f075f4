"""Position information other than BERT's learned table: sinusoids, rotary embeddings, ALiBi and T5's
relative position buckets.

Absolute schemes (learned, sinusoidal) add a vector to the token embeddings. Relative schemes act inside
attention: RoPE rotates queries and keys so that their dot product depends only on the offset between
positions; ALiBi and T5 add a bias per head to the attention scores. A bias is a function of query and
key indices rather than an (L, L) array, so chunked and local kernels build only the blocks they visit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def sinusoidal_table(num_positions: int, features: int, max_timescale: float = 10_000.0) -> np.ndarray:
  """Vaswani et al.'s fixed encodings: sin in the first half of the features, cos in the second, with
  wavelengths from 2π to 2π·max_timescale in geometric progression."""
  half = features // 2
  inv_freq = max_timescale ** (-np.arange(half, dtype=np.float64) / max(half, 1))
  angles = np.arange(num_positions, dtype=np.float64)[:, None] * inv_freq[None, :]
  table = np.zeros((num_positions, features), np.float64)
  table[:, :half] = np.sin(angles)
  table[:, half : 2 * half] = np.cos(angles)
  return table.astype(np.float32)


def apply_rope(x: Array, positions: Array, theta: float = 10_000.0) -> Array:
  """Rotary position embedding (Su et al., RoFormer) on x (batch, length, heads, head_dim).

  Feature i of the first half pairs with feature i of the second half ("rotate half", as in GPT-NeoX and
  ModernBERT); the pair turns by positions · theta^(-2i/head_dim). Computed in float32.
  """
  depth = x.shape[-1]
  if depth % 2:
    raise ValueError(f"rotary embeddings need an even head_dim, got {depth}")
  half = depth // 2
  inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (batch, length, half)
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
  """ALiBi's per-head slopes (Press et al.): 2^(-8/n), 2^(-16/n), ... for n heads when n is a power of two;
  otherwise the slopes of the nearest lower power of two followed by every other slope of the next one."""

  def powers(n):
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]

  if num_heads & (num_heads - 1) == 0:
    return np.asarray(powers(num_heads), np.float32)
  lower = 2 ** int(math.floor(math.log2(num_heads)))
  extra = powers(2 * lower)[0::2][: num_heads - lower]
  return np.asarray(powers(lower) + extra, np.float32)


def alibi_bias(slopes: Array):
  """Bias function for bidirectional ALiBi: -slope_h · |i - j| (symmetric, as encoders use it)."""
  slopes = jnp.asarray(slopes, jnp.float32)

  def bias(q_index: Array, k_index: Array) -> Array:
    distance = jnp.abs(q_index[:, None] - k_index[None, :]).astype(jnp.float32)
    return -slopes[:, None, None] * distance[None]

  return bias


def t5_buckets(relative: Array, num_buckets: int, max_distance: int) -> Array:
  """T5's bidirectional relative-position bucket of (key - query) offsets.

  Half of the buckets are for keys after the query, half for keys before it. Within a half, offsets below
  half the half-range each get their own bucket; larger ones share buckets spaced logarithmically up to
  `max_distance`, beyond which everything falls in the last bucket.
  """
  half = num_buckets // 2
  bucket = jnp.where(relative > 0, half, 0)
  distance = jnp.abs(relative)
  exact = half // 2
  is_small = distance < exact
  # log-spaced for exact <= distance < max_distance; max(distance, 1) keeps the log finite where unused.
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact) / math.log(max_distance / exact)
  large = exact + (log_ratio * (half - exact)).astype(jnp.int32)
  large = jnp.minimum(large, half - 1)
  return bucket + jnp.where(is_small, distance, large)


def t5_bias(table: Array, max_distance: int):
  """Bias function from a learned (num_buckets, heads) table: table[bucket(j - i), h]."""
  num_buckets = table.shape[0]

  def bias(q_index: Array, k_index: Array) -> Array:
    buckets = t5_buckets(k_index[None, :] - q_index[:, None], num_buckets, max_distance)
    return jnp.moveaxis(table.astype(jnp.float32)[buckets], -1, 0)

  return bias
