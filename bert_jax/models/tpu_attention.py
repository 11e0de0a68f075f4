"""The Pallas attention kernels for TPU, behind attention.py's kernel interface.

  pallas  JAX's Pallas flash attention (jax.experimental.pallas.ops.tpu.flash_attention): dense attention
          with an optional score bias (ALiBi, T5) materialised per head
  splash  Pallas splash attention (jax.experimental.pallas.ops.tpu.splash_attention): a static mask, full or
          a sliding window (|i - j| <= window), which lets the kernel skip the blocks outside the band, and
          grouped key/value heads (MQA/GQA) without repeating them; no score bias

Both run per device under `jax.shard_map`: XLA's partitioner cannot split a Mosaic custom call ("Mosaic kernels
cannot be automatically partitioned"), so on a mesh of more than one device the kernel sees the local shard,
with the batch split as the logical rules in force split "batch" and the heads as they split "heads". Both
take padding and packing as segment ids and both tile the sequence in blocks of 128, so rows are padded to a
multiple of 128 with keys no real query can see. Off TPU (the platform of the mesh's devices, see
`attention.target_platform`) they fall back to the `xla` kernel unless `interpret=True`, which runs them in
Pallas' TPU interpreter on any platform (slow; for tests).
"""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from bert_jax.models import attention as base

# Both kernels tile the sequence in blocks of this many tokens (the TPU's lane count).
_TILE = 128
# Segment id of padding (and of the rows added to reach a whole tile). Documents' ids are >= 0 (packing
# numbers them from 1, 0 on padding), so real queries never see a padded key. Padded queries see padded keys
# (at least themselves): no row of the score matrix is empty, which splash attention requires (its
# SegmentIds documentation: an empty row's softmax denominator is 0). Padded rows' outputs therefore differ
# from `xla`'s, where padding attends to real keys; no result reads them, and tests compare real tokens.
_PADDING = -1


def _segment_ids(tokens: base.Tokens) -> jax.Array:
  """(batch, length) int32: the token's document (0 when not packed), `_PADDING` for padding."""
  ids = jnp.zeros(tokens.valid.shape, jnp.int32) if tokens.segments is None else tokens.segments
  return jnp.where(tokens.valid, ids.astype(jnp.int32), _PADDING)


def _padded(length: int) -> int:
  return -(-length // _TILE) * _TILE


def _heads_first(x: jax.Array, padded: int) -> jax.Array:
  """(batch, length, heads, depth) -> (batch, heads, padded, depth), zeros in the added rows."""
  return jnp.pad(x, ((0, 0), (0, padded - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)


def _interpreting(interpret: bool):
  from jax.experimental.pallas import tpu as pltpu

  return pltpu.force_tpu_interpret_mode() if interpret else contextlib.nullcontext()


def _needs_xla(kernel: str, what: str, interpret: bool, deterministic: bool, dropout_rate: float) -> bool:
  """Whether `kernel` hands the call to `xla`: off TPU (unless interpreting), or with attention dropout,
  which neither Pallas kernel has. Logs the reason."""
  platform = base.target_platform()
  if not (interpret or platform == "tpu"):
    base._fallback(
      kernel, "xla", f"{what} needs a TPU; compiling for {platform} (the platform of the mesh's devices)"
    )
    return True
  if not deterministic and dropout_rate > 0.0:
    base._fallback(kernel, "xla", f"{what} has no attention dropout")
    return True
  return False


# --- running per device ---------------------------------------------------------------------------


def _mesh_axes(logical: str, size: int, mesh, axes) -> tuple[str, ...] | None:
  """The mesh axes the logical rules in force split `logical` over, among `axes`; None (the dimension stays
  whole on every device) when there are none or they do not divide `size` (a batch of 1 at initialisation)."""
  spec = nn.logical_to_mesh_axes((logical,))
  target = None if spec is None else spec[0]
  names = (target,) if isinstance(target, str) else tuple(target or ())
  names = tuple(name for name in names if name in axes)
  shards = math.prod(mesh.shape[name] for name in names)
  return names if names and shards > 1 and size % shards == 0 else None


def _per_device(local, query, key, value, ids, bias=None):
  """`local(query, key, value, ids, bias)` on each device's shard of the mesh in force, under shard_map.

  query (batch, length, heads, depth), key/value (batch, length, kv_heads, depth), ids (batch, length), bias
  None or (heads, padded length, padded length). Every length stays whole (the kernels need all keys): a
  sequence split by the rules is gathered. When the heads are split but the key/value heads are too few to
  split alike (multi-query, or fewer than the head shards), K and V enter whole and each device takes the
  key/value heads its query heads read. Without a mesh, or on one device, `local` runs on the whole arrays.
  """
  mesh = jax.sharding.get_abstract_mesh()
  axes = () if mesh.empty else tuple(a for a in mesh.axis_names if a not in mesh.manual_axes)
  if math.prod(mesh.shape[a] for a in axes) <= 1:
    return local(query, key, value, ids, bias)
  heads, kv_heads = query.shape[2], key.shape[2]
  batch_axes = _mesh_axes("batch", query.shape[0], mesh, axes)
  head_axes = _mesh_axes("heads", heads, mesh, axes)
  head_shards = 1 if head_axes is None else math.prod(mesh.shape[a] for a in head_axes)
  kv_axes = head_axes if kv_heads % head_shards == 0 else None
  out_spec = PartitionSpec(batch_axes, None, head_axes, None)
  kv_spec = PartitionSpec(batch_axes, None, kv_axes, None)
  specs = [out_spec, kv_spec, kv_spec, PartitionSpec(batch_axes, None)]
  operands = [query, key, value, ids]
  if bias is not None:
    specs.append(PartitionSpec(head_axes, None, None))
    operands.append(bias)

  def body(q, k, v, ids, bias=None):
    if head_axes is not None and kv_axes is None and kv_heads > 1:
      group, local_heads = heads // kv_heads, q.shape[2]
      first = jax.lax.axis_index(head_axes) * local_heads  # this device's first query head
      if group % local_heads == 0:  # all its query heads read one key/value head
        k, v = (jax.lax.dynamic_slice_in_dim(x, first // group, 1, axis=2) for x in (k, v))
      else:
        index = (first + jnp.arange(local_heads)) // group
        k, v = (jnp.take(x, index, axis=2) for x in (k, v))
    return local(q, k, v, ids, bias)

  # check_vma=False: the library kernels declare their outputs without the varying-across-devices type that
  # checking demands ("manual_axis_type on jax.ShapeDtypeStruct must not be None").
  return jax.shard_map(
    body, in_specs=tuple(specs), out_specs=out_spec, axis_names=set(axes), check_vma=False
  )(*operands)


# --- kernels -------------------------------------------------------------------------------------


@base.register_kernel("pallas")
def pallas_attention(
  query,
  key,
  value,
  tokens,
  *,
  bias=None,
  window=None,
  dropout_rate=0.0,
  dropout_rng=None,
  deterministic=True,
  block_size=256,
  interpret=False,
):
  """The Pallas flash-attention kernel for TPU, per device. Padding and packing become its segment ids; a
  score bias is materialised per head at the padded length; grouped key/value heads are repeated to one per
  query head. `interpret=True` runs the forward pass in Pallas' TPU interpreter on any platform (a gradient
  needs `pltpu.force_tpu_interpret_mode()` around the whole differentiation). `block_size` (the `chunked`
  kernel's) does not apply: the kernel's blocks are 128 tokens."""
  arguments = dict(bias=bias, window=window, block_size=block_size)
  dropout = dict(dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic)
  if _needs_xla("pallas", "the Pallas flash kernel", interpret, deterministic, dropout_rate):
    return base.xla_attention(query, key, value, tokens, **arguments, **dropout)
  if window is not None:
    base._fallback("pallas", "chunked", "the Pallas flash kernel has no sliding window (splash has)")
    return base.chunked_attention(query, key, value, tokens, **arguments)
  from jax.experimental.pallas.ops.tpu import flash_attention as flash

  base._grouped(query, key)
  length, depth = query.shape[1], query.shape[-1]
  padded = _padded(length)
  table = None
  if bias is not None:
    index = jnp.arange(padded)
    table = bias(index, index).astype(jnp.float32)  # (heads, padded, padded), split with the heads
  blocks = flash.BlockSizes(
    **{name: 1 if name == "block_b" else _TILE for name in flash.BlockSizes.__dataclass_fields__}
  )

  def local(q, k, v, ids, table):
    batch, heads = q.shape[0], q.shape[2]
    k, v = (jnp.repeat(x, heads // x.shape[2], axis=2) for x in (k, v))
    ids = jnp.pad(ids, ((0, 0), (0, padded - length)), constant_values=_PADDING)
    ab = None if table is None else jnp.broadcast_to(table[None], (batch,) + table.shape)
    # The kernel scales (scores + bias); scaling the queries instead keeps the bias unscaled.
    out = flash.flash_attention(
      _heads_first(q / jnp.sqrt(depth).astype(q.dtype), padded),
      _heads_first(k, padded),
      _heads_first(v, padded),
      ab=ab,
      segment_ids=flash.SegmentIds(q=ids, kv=ids),
      sm_scale=1.0,
      block_sizes=blocks,
    )
    return out.transpose(0, 2, 1, 3)[:, :length]

  with _interpreting(interpret):
    return _per_device(local, query, key, value, _segment_ids(tokens), table)


def _splash_block(padded: int) -> int:
  """The splash kernel's query and key block: the largest of 512, 256 and 128 tokens that divides the padded
  length (every block size must divide it and be a multiple of 128). Not tuned on hardware."""
  return next(size for size in (4 * _TILE, 2 * _TILE, _TILE) if padded % size == 0)


@base.register_kernel("splash")
def splash_attention(
  query,
  key,
  value,
  tokens,
  *,
  bias=None,
  window=None,
  dropout_rate=0.0,
  dropout_rng=None,
  deterministic=True,
  block_size=256,
  interpret=False,
):
  """Pallas splash attention for TPU, per device: a full mask, or a `LocalMask` of `window` keys on each side
  (its block mask marks the blocks outside the band empty, and the kernel skips them); grouped
  key/value heads (MQA/GQA) are read in place; padding and packing are segment ids. Score biases go to
  `pallas` (dense) or `chunked` (windowed), attention dropout to `xla`. `interpret=True` runs it, forward and
  backward, in Pallas' interpreter on any platform. `block_size` does not apply (see `_splash_block`)."""
  arguments = dict(bias=bias, window=window, block_size=block_size)
  dropout = dict(dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic)
  if _needs_xla("splash", "splash attention", interpret, deterministic, dropout_rate):
    return base.xla_attention(query, key, value, tokens, **arguments, **dropout)
  if bias is not None:
    if window is None:
      base._fallback("splash", "pallas", "splash attention takes no score bias (ALiBi, T5); flash does")
      return pallas_attention(query, key, value, tokens, **arguments, interpret=interpret)
    base._fallback(
      "splash", "chunked", "splash attention takes no score bias (ALiBi, T5) and flash no window"
    )
    return base.chunked_attention(query, key, value, tokens, **arguments)
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

  base._grouped(query, key)
  length, depth = query.shape[1], query.shape[-1]
  padded = _padded(length)
  size = _splash_block(padded)
  shape = (padded, padded)
  mask = masks.FullMask(shape) if window is None else masks.LocalMask(shape, (window, window), offset=0)
  blocks = splash.BlockSizes(
    block_q=size,
    block_kv=size,
    block_kv_compute=size,
    block_q_dkv=size,
    block_kv_dkv=size,
    block_kv_dkv_compute=size,
    block_q_dq=size,
    block_kv_dq=size,
  )

  def local(q, k, v, ids, _):
    # One kernel for this device's heads; its key/value heads may be fewer (grouped, read in place).
    kernel = splash.make_splash_mha(
      masks.MultiHeadMask([mask] * q.shape[2]),
      block_sizes=blocks,
      head_shards=1,
      q_seq_shards=1,
      interpret=interpret,
    )
    ids = jnp.pad(ids, ((0, 0), (0, padded - length)), constant_values=_PADDING)

    def one(q, k, v, ids):  # one sequence: (heads, padded, depth)
      return kernel(q, k, v, segment_ids=splash.SegmentIds(q=ids, kv=ids))

    q = _heads_first(q / jnp.sqrt(depth).astype(q.dtype), padded)
    out = jax.vmap(one)(q, _heads_first(k, padded), _heads_first(v, padded), ids)
    return out.transpose(0, 2, 1, 3)[:, :length]

  return _per_device(local, query, key, value, _segment_ids(tokens))
