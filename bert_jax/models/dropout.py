"""Dropout whose random bits cost (almost) nothing: a keyed integer hash of each element's index.

`jax.random.bernoulli` draws its bits with threefry: on CPU (and GPU without a fused kernel) that is a
separate loop of 20 mixing rounds over every element, about 8% of a BERT training step on this
project's CPU (experiments/benchmarks/HISTORY.md). Here each call mixes the two 32-bit words of its Flax rng
(already a threefry output: make_rng folds the module path in) into k0, k1, and element i keeps its value when

    fmix32(fmix32(inner_i ^ k0) ^ (outer_i + k1)) < keep_prob * 2^32

(fmix32: MurmurHash3's finaliser, a bijection with full avalanche; inner/outer: the element's flat index
over the trailing/leading axes, so arrays beyond 2^32 elements stay distinct). The mask fuses into the
computation that uses it. Masks are deterministic in the rng, independent across rngs (every layer and
step folds its own), and uniform to within 2^-32 of keep_prob; tests/test_dropout.py measures their
keep rate, agreement across keys and correlation between neighbours.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _fmix32(h: Array) -> Array:
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def _flat_index(shape: tuple[int, ...], axes: range) -> Array:
  """uint32 (wrapping) row-major index of every element over `axes` of `shape`, broadcast to shape."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for d in reversed(axes):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, d) * jnp.uint32(stride % 2**32)
    stride *= shape[d]
  return index


def keep_mask(rng: Array, keep_prob: float, shape: tuple[int, ...]) -> Array:
  """bool array of `shape`, True with probability keep_prob, a function of rng alone."""
  shape = tuple(int(s) for s in shape)
  # The key's own words, mixed (a threefry draw here, per dropout, cost BERT-large ~20% of its XLA compile).
  words = jax.random.key_data(rng) if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
  words = jnp.asarray(words).reshape(-1).astype(jnp.uint32)
  k0 = _fmix32(words[0] ^ jnp.uint32(0x9E3779B9))
  k1 = _fmix32(words[1] ^ k0)
  # Trailing axes whose element count fits in 32 bits form the inner index, the rest the outer.
  split = len(shape)
  while split > 0 and math.prod(shape[split - 1 :]) < 2**32:
    split -= 1
  inner = _flat_index(shape, range(split, len(shape)))
  outer = _flat_index(shape, range(split)) if split else jnp.zeros(shape, jnp.uint32)
  bits = _fmix32(_fmix32(inner ^ k0) ^ (outer + k1))
  threshold = min(round(keep_prob * 2**32), 2**32 - 1)
  return bits < jnp.uint32(threshold)


def dropout(x: Array, rate: float, rng: Array | None, deterministic: bool) -> Array:
  """x with each element zeroed at `rate` and the rest scaled by 1 / (1 - rate)."""
  if deterministic or rate == 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  keep = keep_mask(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
  """nn.Dropout's interface (rate; deterministic at call time; the "dropout" rng) with hashed masks."""

  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    return dropout(x, self.rate, self.make_rng("dropout"), False)
