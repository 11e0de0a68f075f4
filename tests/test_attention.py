"""Attention variants and kernels: each against an independent formula or against the dense reference where
it claims to be exact, and every variant's handling of padding, packing and training on real text."""

from __future__ import annotations

import functools
import itertools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax.models import BertConfig, BertModel, attention, attention_kernels, positions, scan_params
from bert_jax.models.layers import EncoderBlock, Mlp

TINY = BertConfig(
  vocab_size=64,
  hidden_size=32,
  num_layers=2,
  num_heads=4,
  mlp_dim=64,
  max_position_embeddings=64,
  attention_dropout_rate=0.0,
  dropout_rate=0.0,
)
# The ablation axes, each on top of BERT.
VARIANTS = {
  "bert": {},
  "sinusoidal": dict(position_encoding="sinusoidal"),
  "sinusoidal_scaled": dict(position_encoding="sinusoidal", scale_embeddings=True),
  "t5": dict(position_encoding="t5", t5_num_buckets=8, t5_max_distance=16),
  "rope": dict(position_encoding="rope"),
  "alibi": dict(position_encoding="alibi"),
  "no_positions": dict(position_encoding="none"),
  "local": dict(attention="local", attention_window=3),
  "local_chunked": dict(
    attention="local", attention_window=3, attention_kernel="chunked", attention_block_size=4
  ),
  "local_global": dict(attention="local_global", attention_window=3, global_every=2, scan_layers=True),
  "mqa": dict(num_kv_heads=1),
  "gqa": dict(num_kv_heads=2),
  "linear": dict(attention="linear"),
  "pre_ln": dict(norm_position="pre"),
  "geglu": dict(gated_mlp=True),
  "chunked": dict(attention_kernel="chunked", attention_block_size=8),
  "dot_product": dict(attention_kernel="dot_product"),
  "pre_ln_geglu_mqa": dict(norm_position="pre", gated_mlp=True, num_kv_heads=1),
}


def _random_qkv(seed=0, batch=2, length=37, heads=4, kv_heads=2, depth=8):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(batch, length, heads, depth)).astype(np.float32)
  k, v = (rng.normal(size=(batch, length, kv_heads, depth)).astype(np.float32) for _ in range(2))
  valid = np.ones((batch, length), bool)
  valid[1, 29:] = False
  segments = np.ones((batch, length), np.int32)
  segments[0, 20:] = 2
  segments[1, 10:29] = 2
  segments[1, 29:] = 0
  return q, k, v, valid, segments


def _numpy_attention(q, k, v, valid, segments=None, bias=None, window=None):
  """softmax(QKᵀ/√d + bias) V over visible keys, written out with numpy; GQA by repeating K and V."""
  group = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if bias is not None:
    scores = scores + bias[None]
  length = q.shape[1]
  allowed = np.broadcast_to(valid[:, None, None, :], scores.shape).copy()
  if segments is not None:
    allowed &= (segments[:, :, None] == segments[:, None, :])[:, None]
  if window is not None:
    offsets = np.abs(np.arange(length)[:, None] - np.arange(length)[None])
    allowed &= (offsets <= window)[None, None]
  scores = np.where(allowed, scores, -1e30)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v)


def _real(x, valid):
  return np.where(valid[..., None, None], np.asarray(x), 0.0)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("window", [None, 4])
def test_reference_kernel_matches_numpy(packed, window):
  q, k, v, valid, segments = _random_qkv()
  segments = segments if packed else None
  slopes = positions.alibi_slopes(4)
  bias = -slopes[:, None, None] * np.abs(np.arange(37)[:, None] - np.arange(37)[None])[None]
  # deterministic (inference) takes the heads-first layout, training the (b, q, h, d) einsums: both exact.
  for (b, fn), deterministic in itertools.product(
    ((None, None), (bias, positions.alibi_bias(slopes))), (True, False)
  ):
    tokens = attention.tokens(jnp.asarray(valid), None if segments is None else jnp.asarray(segments))
    got = attention.xla_attention(q, k, v, tokens, bias=fn, window=window, deterministic=deterministic)
    want = _numpy_attention(q, k, v, valid, segments, b, window)
    np.testing.assert_allclose(_real(got, valid), _real(want, valid), atol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_long_inference_attention_runs_in_query_blocks_and_matches_numpy(packed, monkeypatch):
  """Past twice `_QUERY_BLOCK` tokens, CPU inference attention loops over blocks of query rows (a length
  that is no multiple of the block pads the last one): the same values as numpy, with ALiBi, a window,
  packing and padding, and the loop is really there."""
  monkeypatch.setattr(attention_kernels, "_QUERY_BLOCK", 32)
  length = 150  # five blocks of 32, the last with 10 real rows
  q, k, v, valid, segments = _random_qkv(seed=3, length=length, kv_heads=4)
  valid[1, 131:] = False
  segments[0, 70:] = 2
  segments[1, 40:131] = 3
  segments[1, 131:] = 0
  segments = segments if packed else None
  slopes = positions.alibi_slopes(4)
  bias = -slopes[:, None, None] * np.abs(np.arange(length)[:, None] - np.arange(length)[None])[None]
  tokens = attention.tokens(jnp.asarray(valid), None if segments is None else jnp.asarray(segments))
  for (b, fn), window in itertools.product(((None, None), (bias, positions.alibi_bias(slopes))), (None, 20)):
    run = functools.partial(attention.xla_attention, bias=fn, window=window, deterministic=True)
    assert "scan[" in str(jax.make_jaxpr(run)(q, k, v, tokens))
    want = _numpy_attention(q, k, v, valid, segments, b, window)
    np.testing.assert_allclose(_real(run(q, k, v, tokens), valid), _real(want, valid), atol=1e-5)


def test_a_query_with_no_visible_key_attends_uniformly_and_stays_finite():
  """The padding of a packed row (segment 0) sees no key: the mask, an additive bias of float32's lowest,
  must leave its scores all equal (softmax: uniform over every key), never -inf or NaN, in both layouts,
  and its gradient finite."""
  q, k, v, valid, segments = _random_qkv()
  tokens = attention.tokens(jnp.asarray(valid), jnp.asarray(segments))
  q, k, v = (jnp.asarray(x) * 50.0 for x in (q, k, v))  # large scores: a masked score must still round
  uniform = np.repeat(np.asarray(v), 2, axis=2)[1].mean(axis=0)  # (heads, depth): all 37 keys, GQA repeated
  for deterministic in (True, False):
    got = attention.xla_attention(q, k, v, tokens, deterministic=deterministic)
    np.testing.assert_allclose(
      np.asarray(got)[1, 29:], np.broadcast_to(uniform, (8, 4, 8)), rtol=1e-5, atol=1e-3
    )
    grads = jax.grad(
      lambda q, k, v: jnp.sum(attention.xla_attention(q, k, v, tokens, deterministic=deterministic)),
      argnums=(0, 1, 2),
    )(q, k, v)
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("kernel", ["chunked", "dot_product", "pallas", "splash"])
def test_every_kernel_matches_the_reference(kernel):
  """float32, random inputs with padding, GQA, with and without packing, bias and window: 1e-5 on real tokens.
  The Pallas TPU kernels run in Pallas' interpreter here; what they cannot do (pallas: a window; splash: a
  bias) goes to their fallbacks, which are compared too (splash's with one bias: they are tested kernels)."""
  q, k, v, valid, segments = _random_qkv()
  table = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4)), jnp.float32)
  run = attention.get_kernel(kernel)
  if kernel in ("pallas", "splash"):
    run = functools.partial(run, interpret=True)
  biases = (None, positions.alibi_bias(positions.alibi_slopes(4)), positions.t5_bias(table, 16))
  for packed in (False, True):
    tokens = attention.tokens(jnp.asarray(valid), jnp.asarray(segments) if packed else None)
    for bias in biases[:2] if kernel == "splash" else biases:
      for window in (None, 5) if kernel != "pallas" else (None,):
        want = attention.xla_attention(q, k, v, tokens, bias=bias, window=window)
        got = run(q, k, v, tokens, bias=bias, window=window, block_size=8)
        np.testing.assert_allclose(
          _real(got, valid), _real(want, valid), atol=1e-5, err_msg=f"{packed} {window}"
        )


def test_chunked_gradients_match_the_reference():
  q, k, v, valid, segments = _random_qkv(length=21)
  tokens = attention.tokens(jnp.asarray(valid[:, :21]), jnp.asarray(segments[:, :21]))
  weights = np.random.default_rng(2).normal(size=q.shape).astype(np.float32)

  def loss(kernel, q, k, v):
    return jnp.sum(kernel(q, k, v, tokens, window=6, block_size=4) * weights * valid[:, :21, None, None])

  want = jax.grad(functools.partial(loss, attention.xla_attention), argnums=(0, 1, 2))(q, k, v)
  got = jax.grad(functools.partial(loss, attention.chunked_attention), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-5)


def test_linear_attention_equals_its_quadratic_form():
  q, k, v, valid, segments = _random_qkv()
  phi = lambda x: np.where(x > 0, x + 1.0, np.exp(x))  # noqa: E731 (elu + 1)
  for packed in (False, True):
    kk, vv = np.repeat(k, 2, axis=2), np.repeat(v, 2, axis=2)
    weights = np.einsum("bqhd,bkhd->bhqk", phi(q), phi(kk)) * valid[:, None, None, :]
    if packed:
      weights = weights * (segments[:, :, None] == segments[:, None, :])[:, None]
    with np.errstate(invalid="ignore"):  # padding queries of a packed row see no key: 0/0, never compared
      want = np.einsum("bhqk,bkhd->bqhd", weights / weights.sum(-1, keepdims=True), vv)
    tokens = attention.tokens(jnp.asarray(valid), jnp.asarray(segments) if packed else None)
    got = attention.get("linear")(q, k, v, tokens)
    np.testing.assert_allclose(_real(got, valid), _real(want, valid), atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_offsets():
  rng = np.random.default_rng(3)
  q, k = (jnp.asarray(rng.normal(size=(1, 12, 2, 16)), jnp.float32) for _ in range(2))

  def scores(shift):
    pos = jnp.arange(12)[None] + shift
    return jnp.einsum("bqhd,bkhd->bhqk", positions.apply_rope(q, pos), positions.apply_rope(k, pos))

  base = scores(0)
  for shift in (1, 7, 300):
    np.testing.assert_allclose(scores(shift), base, atol=1e-4)
  # ... and do depend on the offset: the unrotated scores differ.
  assert not np.allclose(base, jnp.einsum("bqhd,bkhd->bhqk", q, k), atol=1e-2)
  # Rotation keeps norms (it is a rotation of each feature pair).
  np.testing.assert_allclose(
    jnp.linalg.norm(positions.apply_rope(q, jnp.arange(12)[None] + 5), axis=-1),
    jnp.linalg.norm(q, axis=-1),
    rtol=1e-5,
  )


def test_position_formulas():
  # ALiBi's slopes for 8 heads are 1/2 ... 1/256 (Press et al., section 3); 6 heads take 4's and every
  # other one of 8's.
  np.testing.assert_allclose(positions.alibi_slopes(8), [2.0**-i for i in range(1, 9)])
  np.testing.assert_allclose(
    positions.alibi_slopes(6), [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
  )
  table = positions.sinusoidal_table(50, 8)
  for pos in (0, 3, 49):
    for i in range(4):
      np.testing.assert_allclose(table[pos, i], np.sin(pos / 10000 ** (i / 4)), atol=1e-6)
      np.testing.assert_allclose(table[pos, 4 + i], np.cos(pos / 10000 ** (i / 4)), atol=1e-6)
  # T5 buckets, 32 buckets / max distance 128: offsets 0..7 own buckets; keys after the query use the upper
  # half; far offsets share the last bucket of their half; buckets never decrease with distance.
  buckets = np.asarray(positions.t5_buckets(jnp.arange(-300, 301), 32, 128))
  offsets = np.arange(-300, 301)
  np.testing.assert_array_equal(buckets[(offsets >= -7) & (offsets <= 0)], np.arange(7, -1, -1))
  np.testing.assert_array_equal(buckets[(offsets > 0) & (offsets <= 7)], 16 + np.arange(1, 8))
  assert set(buckets[offsets <= -128]) == {15} and set(buckets[offsets >= 128]) == {31}
  assert np.all(np.diff(buckets[offsets > 0]) >= 0) and np.all(np.diff(buckets[offsets <= 0]) <= 0)
  assert buckets.min() == 0 and buckets.max() == 31


def _model(config):
  model = BertModel(config, with_pooler=False)
  # Eager, not jitted: for a model this small, dispatching each op costs far less than compiling it.
  params = nn.unbox(model.init(jax.random.key(0), jnp.ones((2, 24), jnp.int32))["params"])
  apply = lambda p, *a, **k: model.apply({"params": p}, *a, **k)["last_hidden_state"]  # noqa: E731
  return params, apply


_IDS = np.random.default_rng(4).integers(5, 64, size=(2, 24)).astype(np.int32)


def _hidden(config, params=None, **kwargs):
  own, apply = _model(config)
  return np.asarray(apply(own if params is None else params, jnp.asarray(_IDS), **kwargs)), own


def test_exact_special_cases_equal_dense():
  dense, params = _hidden(TINY)
  # A window as wide as the sequence, with either kernel, is dense attention.
  for kernel in ("xla", "chunked"):
    local, _ = _hidden(TINY.replace(attention="local", attention_window=24, attention_kernel=kernel), params)
    np.testing.assert_allclose(local, dense, atol=1e-5)
  # Grouped-query attention with as many key/value heads as heads is multi-head attention.
  gqa, _ = _hidden(TINY.replace(num_kv_heads=4), params)
  np.testing.assert_allclose(gqa, dense, atol=1e-6)
  # local_global: the scanned encoder (traced layer index, lax.cond) equals the unscanned one (static choice).
  alternating = TINY.replace(attention="local_global", attention_window=2, global_every=2)
  unscanned, params = _hidden(alternating)
  scanned, _ = _hidden(alternating.replace(scan_layers=True), scan_params(params, 2))
  np.testing.assert_allclose(scanned, unscanned, atol=1e-5)
  assert not np.allclose(unscanned, dense, atol=1e-3)


def test_modernbert_rope_bases_global_and_local(monkeypatch):
  """`rope_theta_global`: the global layers of local_global rotate with their own base (ModernBERT: 160,000
  against 10,000 in the local layers); scanned layers pick it from the traced layer index."""
  rope = TINY.replace(position_encoding="rope", attention="local_global", attention_window=2, global_every=2)
  both = rope.replace(rope_theta=10_000.0, rope_theta_global=160_000.0)
  # One layer: layer 0 is global, so it is the model with the global base everywhere, not the local one.
  _, params = _hidden(both.replace(num_layers=1))
  # Queries and keys 30x the initial scale: attention then depends on positions more than rounding does.
  params = jax.tree_util.tree_map_with_path(
    lambda path, x: x * 30.0 if any(getattr(k, "key", None) in ("query", "key") for k in path) else x, params
  )
  one, _ = _hidden(both.replace(num_layers=1), params)
  global_only, _ = _hidden(rope.replace(num_layers=1, rope_theta=160_000.0), params)
  local_only, _ = _hidden(rope.replace(num_layers=1, rope_theta=10_000.0), params)
  np.testing.assert_allclose(one, global_only, atol=1e-6)
  assert not np.allclose(one, local_only, atol=1e-3)
  # Two layers: layer 0 global, layer 1 local, in that order (queries and keys each).
  seen = []
  apply_rope = positions.apply_rope
  monkeypatch.setattr(
    positions, "apply_rope", lambda x, p, theta: seen.append(float(theta)) or apply_rope(x, p, theta)
  )
  unscanned, params = _hidden(both)
  assert seen == [160_000.0, 160_000.0, 10_000.0, 10_000.0] * 2  # init, then apply
  monkeypatch.setattr(positions, "apply_rope", apply_rope)
  scanned, _ = _hidden(both.replace(scan_layers=True), scan_params(params, 2))
  np.testing.assert_allclose(scanned, unscanned, atol=1e-5)
  with pytest.raises(ValueError, match="rope_theta_global=160000.0 is the base of the global layers"):
    TINY.replace(position_encoding="rope", rope_theta_global=160_000.0)
  with pytest.raises(ValueError, match=r"rope_theta_global=-1.0 \(expected 0, off, or a number above 1\)"):
    rope.replace(rope_theta_global=-1.0)


def test_alibi_with_zero_slopes_equals_no_positions(monkeypatch):
  none, params = _hidden(TINY.replace(position_encoding="none"))
  alibi, _ = _hidden(TINY.replace(position_encoding="alibi"), params)
  assert not np.allclose(alibi, none, atol=1e-3)
  monkeypatch.setattr(positions, "alibi_slopes", lambda heads: np.zeros(heads, np.float32))
  alibi, _ = _hidden(TINY.replace(position_encoding="alibi"), params)
  np.testing.assert_allclose(alibi, none, atol=1e-6)


# The chunked and dot_product kernels meet padding and packing in test_every_kernel_matches_the_reference.
@pytest.mark.parametrize(
  "name", sorted(set(VARIANTS) - {"chunked", "dot_product", "gqa", "pre_ln_geglu_mqa"})
)
def test_variant_respects_padding_and_packing(name):
  """Changing padded tokens changes nothing at real ones; two documents packed into one row give what each
  gives alone (positions restart per document)."""
  config = TINY.replace(**VARIANTS[name])
  params, apply = _model(config)
  mask = np.ones((2, 24), np.int32)
  mask[1, 15:] = 0
  other = _IDS.copy()
  other[1, 15:] = 7
  a = np.asarray(apply(params, jnp.asarray(_IDS), jnp.asarray(mask)))
  b = np.asarray(apply(params, jnp.asarray(other), jnp.asarray(mask)))
  np.testing.assert_allclose(a[1, :15], b[1, :15], atol=1e-5)
  np.testing.assert_allclose(a[0], b[0], atol=1e-6)

  cut = 10
  segments = np.array([[1] * cut + [2] * (24 - cut)] * 2, np.int32)
  positions_ = np.array([list(range(cut)) + list(range(24 - cut))] * 2, np.int32)
  packed = np.asarray(
    apply(params, jnp.asarray(_IDS), segment_ids=jnp.asarray(segments), position_ids=jnp.asarray(positions_))
  )
  first = np.asarray(apply(params, jnp.asarray(_IDS[:, :cut])))
  second = np.asarray(apply(params, jnp.asarray(_IDS[:, cut:])))
  np.testing.assert_allclose(packed[:, :cut], first, atol=1e-5)
  np.testing.assert_allclose(packed[:, cut:], second, atol=1e-5)


def _text_batches(length=32, batch=8, steps=40):
  """Character-level MLM batches from real English text (the bundled Moby-Dick sample)."""
  path = os.path.join(os.path.dirname(__file__), "..", "data", "samples", "en_mobydick.txt")
  with open(path, encoding="utf-8") as f:
    text = f.read(40_000).lower()
  alphabet = sorted(set(text))[: TINY.vocab_size - 2]
  ids = np.array([2 + alphabet.index(c) if c in alphabet else 1 for c in text], np.int32)
  rng = np.random.default_rng(0)
  for _ in range(steps):
    starts = rng.integers(0, len(ids) - length, size=batch)
    tokens = np.stack([ids[s : s + length] for s in starts])
    masked = rng.random(tokens.shape) < 0.15
    yield np.where(masked, 0, tokens), tokens, masked


@pytest.mark.parametrize(
  "name",
  ["sinusoidal", "sinusoidal_scaled", "t5", "rope", "alibi", "local_global", "linear", "pre_ln_geglu_mqa"],
)
def test_variant_learns_real_text(name):
  """40 steps of character-level MLM on Moby-Dick: the masked-character loss falls clearly below where it
  started (uniform guessing over the alphabet is about ln 40 = 3.7)."""
  config = TINY.replace(**VARIANTS[name])
  model = BertModel(config, with_pooler=False)
  params = model.init(jax.random.key(0), jnp.ones((1, 32), jnp.int32))["params"]
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state, inputs, targets, masked):
    def loss_fn(p):
      hidden = model.apply({"params": p}, inputs)["last_hidden_state"]
      logits = model.apply({"params": p}, hidden, method=BertModel.attend)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      return jnp.sum(losses * masked) / jnp.sum(masked)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for inputs, targets, masked in _text_batches():
    params, state, loss = step(params, state, inputs, targets, masked)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses


def test_pre_ln_block_and_gated_mlp_follow_their_formulas():
  config = TINY.replace(norm_position="pre", gated_mlp=True)
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 6, 32)), jnp.float32)
  tokens = attention.tokens(jnp.ones((2, 6), jnp.int32))
  block = EncoderBlock(config, 0)
  params = nn.unbox(block.init(jax.random.key(0), x, tokens)["params"])
  p = jax.tree.map(np.asarray, params)

  def ln(y, norm):
    y = np.asarray(y)
    mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
    return (y - mean) / np.sqrt(var + config.layer_norm_eps) * norm["scale"] + norm["bias"]

  def gelu(y):
    return np.asarray(jax.nn.gelu(jnp.asarray(y), approximate=False))

  mlp = p["mlp"]
  h = ln(x, p["attention_norm"])
  from bert_jax.models.layers import SelfAttention

  attn = np.asarray(SelfAttention(config, 0).apply({"params": params["attention"]}, jnp.asarray(h), tokens))
  y = np.asarray(x) + attn
  z = ln(y, p["mlp_norm"])
  gated = gelu(z @ mlp["gate"]["kernel"] + mlp["gate"]["bias"]) * (
    z @ mlp["intermediate"]["kernel"] + mlp["intermediate"]["bias"]
  )
  want = y + gated @ mlp["output"]["kernel"] + mlp["output"]["bias"]
  got = block.apply({"params": params}, x, tokens)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert set(Mlp(config).init(jax.random.key(0), x)["params"]) == {"intermediate", "gate", "output"}
  # Pre-LN ends the encoder with a LayerNorm; post-LN (BERT) does not.
  params, _ = _model(TINY.replace(norm_position="pre"))
  assert "final_norm" in params["encoder"]


def test_names_and_impossible_combinations_are_clear_errors():
  with pytest.raises(
    ValueError,
    match=r"unknown attention 'flash'; registered attentions are \['dense', 'linear', 'local', 'local_gl",
  ):
    BertModel(TINY.replace(attention="flash")).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))
  with pytest.raises(
    ValueError,
    match=r"unknown attention_kernel 'cuda'; registered attention kernels are \['chunked', 'dot_product',",
  ):
    BertModel(TINY.replace(attention_kernel="cuda")).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))
  with pytest.raises(ValueError, match="attention='linear' cannot use position_encoding='alibi'"):
    BertModel(TINY.replace(attention="linear", position_encoding="alibi")).init(
      jax.random.key(0), jnp.ones((1, 4), jnp.int32)
    )
  with pytest.raises(ValueError, match="num_kv_heads=3 does not divide num_heads=4"):
    TINY.replace(num_kv_heads=3)
  with pytest.raises(ValueError, match="position_encoding='wavelet'"):
    TINY.replace(position_encoding="wavelet")
  with pytest.raises(ValueError, match="not a BERT architecture.*'position_encoding': 'rope'"):
    TINY.replace(position_encoding="rope").to_hf_dict()


@pytest.mark.parametrize("kernel", ["pallas", "splash"])
def test_kernel_fallbacks_are_logged(kernel, caplog, monkeypatch):
  """Compiling for CPU (no mesh: jax.default_backend()), the TPU kernels compute `xla`'s result and say why."""
  monkeypatch.setattr(attention, "_warned", set())  # each reason is logged once per process
  q, k, v, valid, _ = _random_qkv(length=8)
  tokens = attention.tokens(jnp.asarray(valid[:, :8]))
  with caplog.at_level("WARNING", logger="bert_jax.attention"):
    out = attention.get_kernel(kernel)(q[:, :8], k[:, :8], v[:, :8], tokens)
  assert f"attention kernel {kernel!r} falls back to 'xla'" in caplog.text
  assert "needs a TPU; compiling for cpu (the platform of the mesh's devices)" in caplog.text
  np.testing.assert_allclose(out, attention.xla_attention(q[:, :8], k[:, :8], v[:, :8], tokens), atol=1e-6)


def test_relative_positions_run_beyond_the_position_table():
  config = TINY.replace(position_encoding="alibi", max_position_embeddings=16)
  model = BertModel(config, with_pooler=False)
  params = model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"]
  assert model.apply({"params": params}, jnp.ones((1, 40), jnp.int32))["last_hidden_state"].shape == (
    1,
    40,
    32,
  )


def test_grouped_key_value_heads_stay_whole_under_tensor_parallelism():
  from bert_jax import sharding

  shapes = jax.eval_shape(
    BertModel(TINY.replace(num_kv_heads=1)).init, jax.random.key(0), jnp.ones((1, 8), jnp.int32)
  )
  specs = nn.get_partition_spec(shapes)["params"]["encoder"]["layer_0"]["attention"]
  P = jax.sharding.PartitionSpec
  assert specs["query"]["kernel"] == P("embed", "heads", "kv")
  assert specs["key"]["kernel"] == specs["value"]["kernel"] == P("embed", "kv_heads", "kv")
  rules = sharding.rules_for("tp")
  assert nn.logical_to_mesh_axes(("embed", "heads", "kv"), rules) == P(None, "tensor", None)
  assert nn.logical_to_mesh_axes(("embed", "kv_heads", "kv"), rules) == P(None, None, None)


def test_scaled_word_embeddings_under_sinusoids():
  """scale_embeddings: LayerNorm(sqrt(H) * word + type + sinusoid), the MLM decoder on the unscaled table;
  not BERT's architecture, so HuggingFace export refuses it."""
  from bert_jax.models.layers import Embeddings

  config = TINY.replace(position_encoding="sinusoidal", scale_embeddings=True)
  ids = jnp.asarray(np.random.default_rng(3).integers(0, config.vocab_size, (2, 7)), jnp.int32)
  types = jnp.asarray([[0] * 4 + [1] * 3] * 2, jnp.int32)
  positions_ = jnp.broadcast_to(jnp.arange(7), (2, 7))
  embeddings = Embeddings(config)
  params = nn.unbox(embeddings.init(jax.random.key(0), ids, types, positions_)["params"])
  p = jax.tree.map(np.asarray, params)
  x = (
    np.sqrt(config.hidden_size) * p["word_embeddings"]["embedding"][np.asarray(ids)]
    + p["token_type_embeddings"]["embedding"][np.asarray(types)]
    + positions.sinusoidal_table(config.max_position_embeddings, config.hidden_size)[:7]
  )
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  want = (x - mean) / np.sqrt(var + config.layer_norm_eps) * p["layer_norm"]["scale"] + p["layer_norm"][
    "bias"
  ]
  got = embeddings.apply({"params": params}, ids, types, positions_)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  hidden = jnp.ones((1, 2, config.hidden_size))
  np.testing.assert_allclose(
    np.asarray(embeddings.apply({"params": params}, hidden, method=Embeddings.attend)),
    np.ones((1, 2, config.hidden_size)) @ p["word_embeddings"]["embedding"].T,
    rtol=1e-5,
  )
  assert not config.is_bert and not TINY.replace(scale_embeddings=True).is_bert
  with pytest.raises(ValueError, match="scale_embeddings"):
    TINY.replace(scale_embeddings=True).to_hf_dict()
  with pytest.raises(ValueError, match=r"scale_embeddings=1 \(expected True or False\)"):
    TINY.replace(scale_embeddings=1)
