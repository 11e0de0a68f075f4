"""BertModel: embeddings -> encoder (optionally nn.scan over layers, optionally rematerialised) -> pooler.

The model knows no losses; heads.py adds task outputs on top. Parameters are created unscanned
(`encoder/layer_{i}`) or scanned (`encoder/layers`, a leading `layers` axis of length num_layers);
`scan_params`/`unscan_params` convert between the two layouts.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.models import attention as attention_lib
from bert_jax.models.config import BertConfig
from bert_jax.models.layers import Embeddings, EncoderBlock, constrain, dense, kernel_init, layer_norm

Array = jax.Array

_REMAT_POLICIES = {
  "full": None,  # save nothing: recompute the whole layer in the backward pass
  "dots": jax.checkpoint_policies.checkpoint_dots,
  "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class _ScanBlock(nn.Module):
  """EncoderBlock in the (carry, x) -> (carry, y) form nn.scan expects; the layer index is scanned."""

  config: BertConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x, layer_index, tokens, bias_table):
    block = _block_class(self.config)
    return block(self.config, name="block")(x, tokens, bias_table, layer_index, self.deterministic), None


def _block_class(config: BertConfig):
  if config.remat == "none":
    return EncoderBlock
  # deterministic (argument 5, counting self) is a Python bool: it must stay static.
  return nn.remat(EncoderBlock, policy=_REMAT_POLICIES[config.remat], static_argnums=(5,))


class BertEncoder(nn.Module):
  """The stack of layers. Holds what the layers share: T5's relative-position bias table (one for the
  whole encoder, as in T5) and, for pre-LN, the final LayerNorm."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, tokens: attention_lib.Tokens, deterministic: bool = True) -> Array:
    c = self.config
    bias_table = None
    if c.position_encoding == "t5":
      bias_table = self.param(
        "relative_position_bias",
        kernel_init(c, (None, None)),
        (c.t5_num_buckets, c.num_heads),
        jnp.dtype(c.param_dtype),
      )
    if c.scan_layers:
      # One compiled layer body instead of num_layers copies: compile time stops growing with depth.
      stack = nn.scan(
        _ScanBlock,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast, nn.broadcast),
        length=c.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = stack(c, deterministic, name="layers")(x, jnp.arange(c.num_layers), tokens, bias_table)
    else:
      block = _block_class(c)
      for i in range(c.num_layers):
        x = block(c, i, name=f"layer_{i}")(x, tokens, bias_table, None, deterministic)
    if c.norm_position == "pre":
      x = layer_norm(c, "final_norm")(x)
    return x


def pool(config: BertConfig, hidden: Array, attention_mask: Array, pooler: nn.Module | None) -> Array:
  if config.pooling == "cls":
    # BERT's pooler: the [CLS] vector through a dense layer and tanh.
    return jnp.tanh(pooler(hidden[:, 0]))
  return _pool_tokens(config.pooling, hidden, attention_mask.astype(bool)[:, None, :])[:, 0]


def default_inputs(
  input_ids: Array, attention_mask: Array | None, token_type_ids: Array | None, position_ids: Array | None
) -> tuple[Array, Array, Array]:
  """The inputs a caller may leave out, filled as BERT fills them: every token visible, every token in
  segment A, positions 0..L-1 in every row."""
  batch, length = input_ids.shape
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  if position_ids is None:
    position_ids = jnp.broadcast_to(jnp.arange(length), (batch, length))
  return attention_mask, token_type_ids, position_ids


def gather_positions(hidden: Array, positions: Array) -> Array:
  """(B, L, H), (B, P) -> (B, P, H): the hidden states at P positions of each row (BERT's MLM logits at
  the masked positions; the [CLS] of each packed example)."""
  return jnp.take_along_axis(hidden, positions[..., None].astype(jnp.int32), axis=1)


def pool_packed(
  config: BertConfig, hidden: Array, attention_mask: Array, segment_ids: Array, cls_positions: Array, pooler
) -> Array:
  """(B, P, H): `pool` for each of the P examples packed in a row (segment ids 1..P; data/packing.py)."""
  if config.pooling == "cls":
    return jnp.tanh(pooler(gather_positions(hidden, cls_positions)))
  slots = jnp.arange(1, cls_positions.shape[1] + 1)
  keep = (segment_ids[:, None, :] == slots[None, :, None]) & attention_mask.astype(bool)[:, None, :]
  return _pool_tokens(config.pooling, hidden, keep)


def _pool_tokens(pooling: str, hidden: Array, keep: Array) -> Array:
  """(B, L, H), keep (B, P, L) -> (B, P, H): the mean or max of each of P token sets of a row."""
  if pooling == "mean":
    # A 0/1 matmul; "highest" keeps the sum in float32 on TPUs too (their default passes are bf16).
    total = jnp.einsum(
      "bpl,blh->bph", keep.astype(jnp.float32), hidden.astype(jnp.float32), precision="highest"
    )
    count = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1).astype(jnp.float32)
    return (total / count).astype(hidden.dtype)
  return jnp.max(jnp.where(keep[..., None], hidden[:, None], jnp.finfo(hidden.dtype).min), axis=2)


class BertModel(nn.Module):
  """Returns {"last_hidden_state": (B, L, H), "pooler_output": (B, H)}. With `with_pooler=False`
  (token tagging and span QA, as in HuggingFace's heads) there is no pooler and no pooler_output."""

  config: BertConfig
  with_pooler: bool = True

  def setup(self):
    c = self.config
    attention_lib.check(c)  # fail at construction, with the list of valid names
    self.embeddings = Embeddings(c)
    self.encoder = BertEncoder(c)
    # Only BERT's own pooler has weights; mean/max pooling need none.
    with_weights = c.pooling == "cls" and self.with_pooler
    self.pooler = dense(c, c.hidden_size, (None,), ("embed",), name="pooler") if with_weights else None

  def __call__(
    self,
    input_ids: Array,
    attention_mask: Array | None = None,
    token_type_ids: Array | None = None,
    position_ids: Array | None = None,
    *,
    segment_ids: Array | None = None,
    cls_positions: Array | None = None,
    deterministic: bool = True,
  ) -> dict[str, Array]:
    """segment_ids (B, L), for packed sequences: tokens attend only within their own segment (one
    packed document each; 0 = padding); pass position_ids restarting per segment with them.
    cls_positions (B, P), with packed fine-tuning examples: pooler_output is then (B, P, H), one pooled
    vector per example (segments 1..P)."""
    hidden = self.encode(
      input_ids,
      attention_mask,
      token_type_ids,
      position_ids,
      segment_ids=segment_ids,
      deterministic=deterministic,
    )
    if not self.with_pooler:
      return {"last_hidden_state": hidden}
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if cls_positions is None:
      pooled = pool(self.config, hidden, attention_mask, self.pooler)
    elif segment_ids is None:
      raise ValueError("cls_positions (packed examples) needs the segment_ids of the packing")
    else:
      pooled = pool_packed(self.config, hidden, attention_mask, segment_ids, cls_positions, self.pooler)
    return {"last_hidden_state": hidden, "pooler_output": pooled}

  def encode(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    *,
    segment_ids=None,
    deterministic=True,
  ) -> Array:
    c = self.config
    length = input_ids.shape[1]
    # Relative positions (rope, alibi, t5) and none have no table: any length runs.
    if c.position_encoding in ("learned", "sinusoidal") and length > c.max_position_embeddings:
      raise ValueError(
        f"sequence length {length} exceeds max_position_embeddings={c.max_position_embeddings}"
      )
    attention_mask, token_type_ids, position_ids = default_inputs(
      input_ids, attention_mask, token_type_ids, position_ids
    )
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    x = self.encoder(x, attention_lib.tokens(attention_mask, segment_ids, position_ids), deterministic)
    return constrain(x, ("batch", "length", "embed"))

  def attend(self, x: Array) -> Array:
    return self.embeddings.attend(x)


# --- scanned <-> unscanned parameter layouts ------------------------------------------------


def unscan_params(params, num_layers: int):
  """encoder/layers/block/<leaf with leading layer axis> -> encoder/layer_{i}/<leaf>. Works on any
  pytree holding an `encoder` (a BertModel's params or a head model's `bert` subtree)."""
  return _map_encoder(
    params,
    lambda enc: {
      f"layer_{i}": jax.tree.map(lambda a, i=i: a[i], enc["layers"]["block"]) for i in range(num_layers)
    },
  )


def scan_params(params, num_layers: int):
  """encoder/layer_{i}/<leaf> -> encoder/layers/block/<leaf stacked on a leading layer axis>."""

  def stack(enc):
    missing = [i for i in range(num_layers) if f"layer_{i}" not in enc]
    if missing:
      raise ValueError(
        f"cannot scan params: encoder has no layer(s) {missing} (expected {num_layers} layers)"
      )
    layers = [enc[f"layer_{i}"] for i in range(num_layers)]
    stack_fn = jnp.stack if isinstance(jax.tree.leaves(layers[0])[0], jax.Array) else np.stack
    return {"layers": {"block": jax.tree.map(lambda *xs: stack_fn(xs), *layers)}}

  return _map_encoder(params, stack)


def _map_encoder(tree, fn):
  if not isinstance(tree, dict):
    return tree
  return {k: fn(v) if k == "encoder" else _map_encoder(v, fn) for k, v in tree.items()}
