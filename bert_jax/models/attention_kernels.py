"""The XLA attention kernels, registered by name with `attention.register_kernel`: `xla` (the reference, dense
score matrix), `chunked` (online softmax over key blocks: linear memory, and linear time with a window) and
`dot_product` (`jax.nn.dot_product_attention`, cuDNN flash attention on GPU).

The interface they implement (the `Kernel` protocol, `Tokens`, `visible`) and the registries live in
attention.py, which imports this module at its end so that the kernels are registered whenever attention is
imported; import them from there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from bert_jax.models import dropout as dropout_lib
from bert_jax.models.attention import _fallback, _grouped, register_kernel, target_platform, visible


@register_kernel("xla")
def xla_attention(
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
):
  """The reference: softmax(Q Kᵀ / sqrt(d) + bias + mask) V over all positions at once.

  Measured layout choices (experiments/benchmarks/HISTORY.md): multi-head attention keeps the plain
  (batch, heads, q, k) layout (grouped heads need the (kv heads, group) split), and the softmax is
  normalised after the product with V — exp(s - max) V / sum exp(s - max), the same value — so XLA
  divides the (q, d) context instead of the (q, k) probabilities and does not fuse the division into
  the matmul (which made head_dim 32 models 20% slower). Inference (`deterministic`) moves the heads
  first before the two products — Q (b, h, q, d) @ K (b, h, d, k), P (b, h, q, k) @ V (b, h, k, d),
  plain batched matmuls — which made CPU forward passes 1.03-1.21x faster but training steps 0.94-0.99x
  (their gradients), so training keeps the einsums over the (b, q, h, d) projections. On CPU, rows longer
  than 256 tokens run the inference attention in blocks of query rows (`_query_blocks`)."""
  batch, length, kv_heads, group, depth = _grouped(query, key)
  q = query / jnp.sqrt(depth).astype(query.dtype)
  index = jnp.arange(length)
  if group == 1 and deterministic:
    key = jnp.transpose(key, (0, 2, 3, 1))
    value = jnp.transpose(value, (0, 2, 1, 3))
    if length > 2 * _QUERY_BLOCK and target_platform() == "cpu":
      return _query_blocks(q, key, value, tokens, bias, window)
    context = _heads_first(
      jnp.transpose(q, (0, 2, 1, 3)), key, value, tokens, tokens.segments, bias, window, index
    )
    return jnp.transpose(context, (0, 2, 1, 3))  # back to the projections' (b, q, h, d)
  mask = visible(tokens.valid, tokens.segments, tokens.segments, index, index, window)
  if group == 1:
    scores_spec, context_spec, shape = "bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd", (kv_heads, length, length)
    mask = mask[:, None]
  else:
    q = q.reshape(batch, length, kv_heads, group, depth)
    scores_spec, context_spec = "bqkgd,bskd->bkgqs", "bkgqs,bskd->bqkgd"
    shape = (kv_heads, group, length, length)
    mask = mask[:, None, None]
  # Softmax in float32 whatever the compute dtype: bf16 logits lose the small differences
  # between scores that decide the attention pattern.
  scores = jnp.einsum(scores_spec, q, key).astype(jnp.float32)
  if bias is not None:
    scores = scores + bias(index, index).reshape(shape)
  # The mask as an additive bias (see _heads_first).
  scores = scores + jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
  weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
  total = weights.sum(axis=-1)
  weights = dropout_lib.dropout(weights, dropout_rate, dropout_rng, deterministic)
  context = jnp.einsum(context_spec, weights.astype(value.dtype), value)
  # total: (b, h, q) or (b, k, g, q) -> the context's (b, q, h) or (b, q, k, g)
  total = jnp.moveaxis(total, -1, 1)[..., None]
  return (context.astype(jnp.float32) / total).astype(context.dtype).reshape(query.shape)


# Query rows per block of the blocked CPU inference attention (`_query_blocks`).
_QUERY_BLOCK = 128


def _heads_first(q, key, value, tokens, segments_q, bias, window, q_index):
  """Inference attention of queries q (b, h, q, d) at positions q_index against all keys, as two plain
  batched matmuls: keys (b, h, d, k), values (b, h, k, d); returns the context (b, h, q, d)."""
  k_index = jnp.arange(key.shape[-1])
  scores = jnp.einsum("bhqd,bhdk->bhqk", q, key).astype(jnp.float32)
  if bias is not None:
    scores = scores + bias(q_index, k_index)
  # The mask as an additive bias, 0 or float32's lowest, made at the mask's own (small) shape: a select
  # of the (q, k) scores keeps XLA's CPU backend from fusing the two products and the softmax into one
  # kernel, which the bias allows (3.5x faster attention at MiniLM's shape,
  # experiments/benchmarks/HISTORY.md). A masked score rounds to the bias exactly (|score| is far below
  # the bias's ulp, 2^103), so a query with no visible key (padding of a packed row) sees all-equal
  # scores: uniform, as softmax.
  mask = visible(tokens.valid, segments_q, tokens.segments, q_index, k_index, window)[:, None]
  scores = scores + jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
  weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
  context = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(value.dtype), value)
  return (context.astype(jnp.float32) / weights.sum(axis=-1)[..., None]).astype(context.dtype)


def _query_blocks(q, key, value, tokens, bias, window):
  """`_heads_first` over blocks of `_QUERY_BLOCK` query rows in a loop (lax.map), for long rows on CPU.

  The blocks keep the attention's temporaries small: at 512 tokens a layer's scores are 12 MiB per batch row,
  and glibc's default allocator returns blocks that large to the kernel when they are freed, so every call
  page-faulted them in again (BERT-base forward at 2 x 512: 661 MiB of minor faults per call, 59 MiB with
  blocks of 128 rows). Separate processes, glibc's defaults (what `import bert_jax` leaves): BERT-base forward
  2 x 512 and 8 x 384 1.15-1.27x faster, MiniLM 8 x 512 1.6x; with freed memory kept (`hostmem`, the runner)
  0.91-1.13x (experiments/benchmarks/HISTORY.md). Memory grows linearly with the length instead of
  quadratically: XLA's CPU backend ran the unblocked attention as one library kernel holding every head's
  whole score matrix (one 4-head layer at 8,192 tokens: 2,098 MiB resident, 99 MiB blocked). The threshold:
  isolated attention at 256 tokens ran 0.7x in blocks (one process, glibc's defaults; not measured in separate
  processes).
  Queries (b, length, h, d) are padded to whole blocks (padded rows dropped); returns (b, length, h, d)."""
  batch, length, heads, depth = q.shape
  blocks = -(-length // _QUERY_BLOCK)
  extra = blocks * _QUERY_BLOCK - length
  q = jnp.pad(q, ((0, 0), (0, extra), (0, 0), (0, 0))).reshape(batch, blocks, _QUERY_BLOCK, heads, depth)
  segments = tokens.segments
  if segments is not None:
    segments = jnp.pad(segments, ((0, 0), (0, extra)), constant_values=-1)
    segments = segments.reshape(batch, blocks, _QUERY_BLOCK).transpose(1, 0, 2)
  index = jnp.arange(blocks * _QUERY_BLOCK).reshape(blocks, _QUERY_BLOCK)

  def block(args):
    q_block, segments_q, q_index = args
    return _heads_first(q_block, key, value, tokens, segments_q, bias, window, q_index)

  context = jax.lax.map(block, (q.transpose(1, 0, 3, 2, 4), segments, index))  # (blocks, b, h, rows, d)
  context = context.transpose(1, 0, 3, 2, 4).reshape(batch, blocks * _QUERY_BLOCK, heads, depth)
  return context[:, :length]


@register_kernel("chunked")
def chunked_attention(
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
):
  """Blockwise attention with an online softmax (Rabe & Staats 2021; Dao et al. 2022), in plain JAX.

  Query blocks are mapped one at a time and rematerialised in the backward pass; within a block, key blocks
  are scanned while a running max and sum rescale the partial context. Peak memory is O(length x block)
  instead of O(length²). With a window, only the 2r+1 key blocks that can hold visible keys are scanned.
  """
  batch, length, kv_heads, group, depth = _grouped(query, key)
  heads = kv_heads * group
  size = min(block_size, length)
  blocks = -(-length // size)
  padded = blocks * size
  extra = padded - length

  def pad(x, value=0):
    widths = [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x, widths, constant_values=value) if extra else x

  q = pad(query / jnp.sqrt(depth).astype(query.dtype)).reshape(batch, blocks, size, kv_heads, group, depth)
  k = pad(key).reshape(batch, blocks, size, kv_heads, depth)
  v = pad(value).reshape(batch, blocks, size, kv_heads, depth)
  valid = pad(tokens.valid, False).reshape(batch, blocks, size)
  segments = None if tokens.segments is None else pad(tokens.segments, -1).reshape(batch, blocks, size)
  if window is None:
    offsets, relative = jnp.arange(blocks), False
  else:
    reach = -(-window // size)
    offsets, relative = jnp.arange(-reach, reach + 1), True
  low = jnp.finfo(jnp.float32).min
  within = jnp.arange(size)

  def query_block(i):
    q_i = q[:, i]
    q_index = i * size + within
    seg_q = None if segments is None else segments[:, i]

    def key_block(carry, offset):
      acc, top, total = carry
      j = i + offset if relative else offset
      in_range = (j >= 0) & (j < blocks)
      j = jnp.clip(j, 0, blocks - 1)
      k_index = j * size + within
      scores = jnp.einsum("bqkgd,bskd->bkgqs", q_i, k[:, j]).astype(jnp.float32)
      if bias is not None:
        scores = scores + bias(q_index, k_index).reshape(kv_heads, group, size, size)
      seg_k = None if segments is None else segments[:, j]
      mask = visible(valid[:, j] & in_range, seg_q, seg_k, q_index, k_index, window)
      scores = jnp.where(mask[:, None, None], scores, low)
      new_top = jnp.maximum(top, scores.max(-1))
      scale = jnp.exp(top - new_top)
      probs = jnp.exp(scores - new_top[..., None])
      total = total * scale + probs.sum(-1)
      if not deterministic and dropout_rate > 0.0:
        rng = jax.random.fold_in(jax.random.fold_in(dropout_rng, i), j)
        probs = dropout_lib.dropout(probs, dropout_rate, rng, False)
      update = jnp.einsum("bkgqs,bskd->bkgqd", probs.astype(value.dtype), v[:, j]).astype(jnp.float32)
      return (acc * scale[..., None] + update, new_top, total), None

    shape = (batch, kv_heads, group, size)
    init = (jnp.zeros(shape + (depth,), jnp.float32), jnp.full(shape, low), jnp.zeros(shape, jnp.float32))
    (acc, _, total), _ = jax.lax.scan(key_block, init, offsets)
    context = (acc / total[..., None]).astype(query.dtype)  # (batch, kv_heads, group, size, depth)
    return jnp.moveaxis(context, 3, 1).reshape(batch, size, heads, depth)

  context = jax.lax.map(jax.checkpoint(query_block), jnp.arange(blocks))  # (blocks, batch, size, H, D)
  context = jnp.moveaxis(context, 0, 1).reshape(batch, padded, heads, depth)
  return context[:, :length]


@register_kernel("dot_product")
def dot_product_kernel(
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
):
  """`jax.nn.dot_product_attention`: cuDNN's fused flash attention on GPU (bf16/fp16), XLA elsewhere."""
  arguments = {"bias": bias, "window": window, "block_size": block_size}
  if not deterministic and dropout_rate > 0.0:
    _fallback("dot_product", "xla", "jax.nn.dot_product_attention has no attention dropout")
    return xla_attention(
      query,
      key,
      value,
      tokens,
      dropout_rate=dropout_rate,
      dropout_rng=dropout_rng,
      deterministic=False,
      **arguments,
    )
  length, depth = query.shape[1], query.shape[-1]
  index = jnp.arange(length)
  mask = visible(tokens.valid, tokens.segments, tokens.segments, index, index, None)[:, None]
  bias_array = None if bias is None else bias(index, index)[None].astype(query.dtype)
  implementation = None
  if target_platform() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16):
    implementation = "cudnn"

  def call(implementation):
    return jax.nn.dot_product_attention(
      query,
      key,
      value,
      bias_array,
      mask,
      scale=1.0 / math.sqrt(depth),
      local_window_size=None if window is None else (window, window),
      implementation=implementation,
    )

  if implementation == "cudnn":
    try:
      return call("cudnn")
    except (ValueError, NotImplementedError, RuntimeError) as e:
      _fallback("dot_product", "dot_product (XLA)", f"cuDNN refused this call: {e}")
  return call(None)
