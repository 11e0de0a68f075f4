"""BERT's building blocks: embeddings, self-attention, the feed-forward block, one encoder layer.

Every parameter carries logical axis names (`batch`, `length`, `embed`, `mlp`, `heads`, `kv`,
`vocab`); sharding.py maps them onto a device mesh. Key activations are constrained with the
same names so XLA keeps the intended layout. Outside a mesh both are no-ops.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models import attention as attention_lib
from bert_jax.models import positions as positions_lib
from bert_jax.models.config import BertConfig
from bert_jax.models.dropout import Dropout

Array = jax.Array


def dtypes(config: BertConfig):
  return jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)


def kernel_init(config: BertConfig, axes):
  """BERT initialises every weight from a normal truncated at two standard deviations."""
  init = nn.initializers.truncated_normal(stddev=config.initializer_range)
  return nn.with_logical_partitioning(init, axes)


def zeros_init(axes):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def gelu_exact(x: Array) -> Array:
  """GELU as BERT and PyTorch write it, x/2 (1 + erf(x/√2)).

  The select is a no-op (erf(NaN) is NaN): it keeps XLA's CPU backend from pulling GELU into the next
  matmul's YNNPACK fusion, where it runs slower, so GELU and the bias add before it become one loop. In
  all-MiniLM-L6-v2's forward at 32 x 128 that loop takes 13 ms against 41 ms for `jax.nn.gelu`'s erfc form
  (an add and an erfc loop); plain erf without the select is slower still (experiments/benchmarks/README.md).
  """
  y = 0.5 * x * (1.0 + jax.lax.erf(x * 0.7071067811865476))
  return jnp.where(x != x, x, y)


def activation(config: BertConfig):
  # BERT's original GELU is exact (erf); "gelu_new" checkpoints use the tanh approximation.
  if config.activation == "gelu_tanh":
    return functools.partial(jax.nn.gelu, approximate=True)
  return gelu_exact


def constrain(x: Array, axes) -> Array:
  return nn.with_logical_constraint(x, axes)


def layer_norm(config: BertConfig, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm over `embed`. Flax keeps the statistics in float32 under bf16 compute; the two-pass
  variance (not E[x²] - E[x]²) is what BERT computes and keeps float32 parity at 1e-6."""
  dtype, param_dtype = dtypes(config)
  return nn.LayerNorm(
    epsilon=config.layer_norm_eps,
    dtype=dtype,
    param_dtype=param_dtype,
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
    bias_init=zeros_init(("embed",)),
    name=name,
  )


class Dense(nn.Module):
  """x (..., *in) @ kernel (*in, *out) + bias (*out), contracting the last len(in_axes) dimensions.

  Unlike nn.DenseGeneral, the kernel is initialised in its real multi-dimensional shape, so its
  logical names (e.g. embed, heads, kv) apply to the array the initialiser creates under a mesh.
  """

  config: BertConfig
  features: tuple[int, ...]
  in_axes: tuple
  out_axes: tuple

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dtype, param_dtype = dtypes(self.config)
    n_in = len(self.in_axes)
    kernel = self.param(
      "kernel",
      kernel_init(self.config, self.in_axes + self.out_axes),
      x.shape[-n_in:] + self.features,
      param_dtype,
    )
    bias = self.param("bias", zeros_init(self.out_axes), self.features, param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype)
    # One 2-D matmul, (rows, in) @ (in, out), with the kernel's dimensions merged: measured 6-9% faster
    # training steps on CPU than a dot_general over the multi-dimensional kernel, whose gradients XLA
    # laid out with extra copies (experiments/benchmarks/README.md). The parameter keeps its shape.
    lead = x.shape[: x.ndim - n_in]
    y = x.reshape(math.prod(lead), -1) @ kernel.reshape(-1, math.prod(self.features))
    return y.reshape(lead + self.features) + bias


def dense(config: BertConfig, features, in_axes, out_axes, name) -> Dense:
  features = (features,) if isinstance(features, int) else tuple(features)
  return Dense(config, features, tuple(in_axes), tuple(out_axes), name=name)


class Embeddings(nn.Module):
  """word + position + token type (segment), then LayerNorm and dropout. Positions are BERT's learned
  table, fixed sinusoids, or nothing here when they act inside attention (rope, alibi, t5) or are off."""

  config: BertConfig

  def setup(self):
    c = self.config
    dtype, param_dtype = dtypes(c)
    embed = functools.partial(nn.Embed, features=c.hidden_size, dtype=dtype, param_dtype=param_dtype)
    self.word_embeddings = embed(
      num_embeddings=c.vocab_size, embedding_init=kernel_init(c, ("vocab", "embed"))
    )
    if c.position_encoding == "learned":
      self.position_embeddings = embed(
        num_embeddings=c.max_position_embeddings, embedding_init=kernel_init(c, (None, "embed"))
      )
    self.token_type_embeddings = embed(
      num_embeddings=c.type_vocab_size, embedding_init=kernel_init(c, (None, "embed"))
    )
    self.layer_norm = layer_norm(c)
    self.dropout = Dropout(c.dropout_rate)

  def __call__(
    self, input_ids: Array, token_type_ids: Array, position_ids: Array, deterministic: bool = True
  ) -> Array:
    c = self.config
    x = self.word_embeddings(input_ids)
    if c.scale_embeddings:
      x = x * jnp.asarray(math.sqrt(c.hidden_size), x.dtype)
    x = x + self.token_type_embeddings(token_type_ids)
    if c.position_encoding == "learned":
      x = x + self.position_embeddings(position_ids)
    elif c.position_encoding == "sinusoidal":
      table = positions_lib.sinusoidal_table(c.max_position_embeddings, c.hidden_size)
      x = x + jnp.asarray(table, x.dtype)[position_ids]
    x = self.layer_norm(x)
    x = self.dropout(x, deterministic=deterministic)
    return constrain(x, ("batch", "length", "embed"))

  def attend(self, x: Array) -> Array:
    """Logits against the word embedding table: the MLM decoder shares these weights."""
    return self.word_embeddings.attend(x)


class SelfAttention(nn.Module):
  """Multi-head self-attention: project to heads (fewer key/value heads for MQA/GQA), add positions (RoPE,
  a bias), attend with the configured variant and kernel, merge heads. `layer` is the layer's index when
  known statically (unscanned layers); scanned layers pass a traced `layer_index` instead."""

  config: BertConfig
  layer: int | None = None

  @nn.compact
  def __call__(
    self,
    x: Array,
    tokens: attention_lib.Tokens,
    bias_table: Array | None = None,
    layer_index: Array | None = None,
    deterministic: bool = True,
  ) -> Array:
    c = self.config
    # With fewer key/value heads than tensor-parallel shards, K and V stay whole on every device.
    kv_axis = "heads" if c.kv_heads == c.num_heads else "kv_heads"
    query = dense(c, (c.num_heads, c.head_dim), ("embed",), ("heads", "kv"), name="query")(x)
    key = dense(c, (c.kv_heads, c.head_dim), ("embed",), (kv_axis, "kv"), name="key")(x)
    value = dense(c, (c.kv_heads, c.head_dim), ("embed",), (kv_axis, "kv"), name="value")(x)
    query = constrain(query, ("batch", "length", "heads", "kv"))
    key, value = (constrain(t, ("batch", "length", kv_axis, "kv")) for t in (key, value))
    bias = None
    if c.position_encoding == "rope":
      theta = rope_theta(c, self.layer if self.layer is not None else layer_index)
      query = positions_lib.apply_rope(query, tokens.positions, theta)
      key = positions_lib.apply_rope(key, tokens.positions, theta)
    elif c.position_encoding == "alibi":
      bias = positions_lib.alibi_bias(positions_lib.alibi_slopes(c.num_heads))
    elif c.position_encoding == "t5":
      bias = positions_lib.t5_bias(bias_table, c.t5_max_distance)
    dropout_rng = None
    if not deterministic and c.attention_dropout_rate > 0.0:
      dropout_rng = self.make_rng("dropout")
    context = attention_lib.get(c.attention)(
      query,
      key,
      value,
      tokens,
      config=c,
      layer=self.layer if self.layer is not None else layer_index,
      bias=bias,
      dropout_rate=c.attention_dropout_rate,
      dropout_rng=dropout_rng,
      deterministic=deterministic,
    )
    context = constrain(context, ("batch", "length", "heads", "kv"))
    out = dense(c, c.hidden_size, ("heads", "kv"), ("embed",), name="out")(context)
    return constrain(out, ("batch", "length", "embed"))


def rope_theta(config: BertConfig, layer):
  """The RoPE base of a layer: `rope_theta`, or `rope_theta_global` in the global layers of local_global
  (ModernBERT's 160,000 against 10,000). `layer` is an int, or traced under scanned layers."""
  if not config.rope_theta_global:
    return config.rope_theta
  is_global = layer % config.global_every == 0
  if isinstance(layer, int):
    return config.rope_theta_global if is_global else config.rope_theta
  return jnp.where(is_global, config.rope_theta_global, config.rope_theta).astype(jnp.float32)


class Mlp(nn.Module):
  """The position-wise feed-forward block: dense to mlp_dim, GELU, dense back to hidden_size. Gated
  (`gated_mlp`, GeGLU with GELU): GELU(x W_gate) * (x W_in), then back to hidden_size."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    h = dense(c, c.mlp_dim, ("embed",), ("mlp",), name="intermediate")(x)
    if c.gated_mlp:
      h = activation(c)(dense(c, c.mlp_dim, ("embed",), ("mlp",), name="gate")(x)) * h
    else:
      h = activation(c)(h)
    h = constrain(h, ("batch", "length", "mlp"))
    return dense(c, c.hidden_size, ("mlp",), ("embed",), name="output")(h)


class EncoderBlock(nn.Module):
  """One Transformer layer. Post-LN, as in BERT: x = LN(x + Attn(x)); x = LN(x + MLP(x)).
  Pre-LN: x = x + Attn(LN(x)); x = x + MLP(LN(x)) (the encoder then ends with one more LayerNorm)."""

  config: BertConfig
  layer: int | None = None

  @nn.compact
  def __call__(
    self,
    x: Array,
    tokens: attention_lib.Tokens,
    bias_table: Array | None = None,
    layer_index: Array | None = None,
    deterministic: bool = True,
  ) -> Array:
    c = self.config
    drop = Dropout(c.dropout_rate)
    attention = SelfAttention(c, self.layer, name="attention")
    mlp = Mlp(c, name="mlp")
    attention_norm, mlp_norm = layer_norm(c, "attention_norm"), layer_norm(c, "mlp_norm")
    if c.norm_position == "pre":
      x = x + drop(
        attention(attention_norm(x), tokens, bias_table, layer_index, deterministic), deterministic
      )
      x = x + drop(mlp(mlp_norm(x)), deterministic=deterministic)
    else:
      h = attention(x, tokens, bias_table, layer_index, deterministic)
      x = attention_norm(x + drop(h, deterministic=deterministic))
      x = mlp_norm(x + drop(mlp(x), deterministic=deterministic))
    return constrain(x, ("batch", "length", "embed"))
