"""Hashed dropout masks (models/dropout.py) behave like independent Bernoulli draws: keep rate, agreement
between keys, no correlation between neighbours along any axis, determinism, scaling."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models import dropout


def _sigmas(observed: float, p: float, n: int) -> float:
  return abs(observed - p) / np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_keep_rate_and_independence(keep):
  shape = (4, 12, 128, 128)  # an attention-probability shape: 786,432 draws
  a = np.asarray(dropout.keep_mask(jax.random.key(0), keep, shape))
  b = np.asarray(dropout.keep_mask(jax.random.key(1), keep, shape))
  n = a.size
  assert _sigmas(a.mean(), keep, n) < 5 and _sigmas(b.mean(), keep, n) < 5
  # Two keys: the masks agree as often as independent draws would.
  agree = keep**2 + (1 - keep) ** 2
  assert _sigmas((a == b).mean(), agree, n) < 5
  # Neighbours along every axis (and a far shift): both kept as often as keep².
  for axis in range(4):
    x, y = np.moveaxis(a, axis, 0)[:-1], np.moveaxis(a, axis, 0)[1:]
    assert _sigmas((x & y).mean(), keep**2, x.size) < 5, axis
  flat = a.reshape(-1)
  assert _sigmas((flat[:-4096] & flat[4096:]).mean(), keep**2, flat.size - 4096) < 5


def test_masks_are_deterministic_and_differ_between_shapes_and_folded_keys():
  key = jax.random.key(3)
  m1 = np.asarray(dropout.keep_mask(key, 0.5, (64, 64)))
  np.testing.assert_array_equal(m1, dropout.keep_mask(key, 0.5, (64, 64)))
  m2 = np.asarray(dropout.keep_mask(jax.random.fold_in(key, 1), 0.5, (64, 64)))
  assert 0.4 < (m1 == m2).mean() < 0.6
  # Rows of one array are not copies of each other (the index, not only the key, drives the hash).
  assert len({row.tobytes() for row in m1}) == 64


def test_dropout_scales_kept_values_and_matches_flax_module_interface():
  x = jnp.ones((256, 256))
  y = np.asarray(dropout.dropout(x, 0.25, jax.random.key(0), deterministic=False))
  kept = y != 0
  np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
  assert _sigmas(kept.mean(), 0.75, kept.size) < 5
  assert np.all(np.asarray(dropout.dropout(x, 0.25, None, deterministic=True)) == 1)
  assert np.all(np.asarray(dropout.dropout(x, 1.0, jax.random.key(0), deterministic=False)) == 0)
  module = dropout.Dropout(0.5)
  out = module.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  assert _sigmas(float((np.asarray(out) != 0).mean()), 0.5, x.size) < 5
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)

  # Inside a model: different submodules fold different rngs, so their masks differ.
  class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
      return dropout.Dropout(0.5)(x, False), dropout.Dropout(0.5)(x, False)

  a, b = Two().apply({}, x, rngs={"dropout": jax.random.key(0)})
  assert 0.4 < float(((np.asarray(a) != 0) == (np.asarray(b) != 0)).mean()) < 0.6


def test_arrays_beyond_32_bit_indices_split_the_index():
  # Abstract evaluation only: a (2, 2**31, 2) mask would be 8 GiB; the index split must still trace.
  out = jax.eval_shape(lambda k: dropout.keep_mask(k, 0.9, (3, 2**31, 2)), jax.random.key(0))
  assert out.shape == (3, 2**31, 2) and out.dtype == jnp.bool_
