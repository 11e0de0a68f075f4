"""Attention behind one interface: variants (what is computed) and kernels (how), both chosen by name.

A **kernel** computes softmax attention. It takes queries (batch, length, heads, head_dim), keys and values
(batch, length, kv_heads, head_dim; kv_heads divides heads: multi-query and grouped-query attention),
a `Tokens` record (which tokens are real, their packed-document segment ids and positions), an optional
bias function (query indices, key indices) -> (heads, q, k) added to the scores (ALiBi, T5), an optional
sliding window (a key j is visible from query i when |i - j| <= window), and attention dropout. It returns
the context (batch, length, heads, head_dim). Kernels, `BertConfig.attention_kernel`:

  xla          the reference: the full score matrix, softmax in float32, then the values
  chunked      memory-efficient (online softmax over key blocks, rematerialised per query block): memory
               grows linearly with length; with a window only the blocks in the band are visited, so
               local attention costs linear time too
  dot_product  `jax.nn.dot_product_attention`: cuDNN flash attention on GPU for bf16/fp16, XLA elsewhere
  pallas       the Pallas flash-attention kernel for TPU (jax.experimental.pallas.ops.tpu)
  splash       Pallas splash attention for TPU: dense and sliding-window masks, grouped key/value heads
  (the two TPU kernels live in tpu_attention.py and run per device under jax.shard_map)

A kernel that cannot run a request (not compiling for TPU, no dropout support, no window or bias support)
falls back to one that can and logs the reason once. Kernels ask `target_platform()` which platform they are
compiled for: the mesh's devices, which differ from `jax.default_backend()` when compiling ahead of time for
a TPU that is not attached. A **variant**, `BertConfig.attention`, decides what each layer computes:

  dense         full bidirectional attention (BERT)
  local         sliding window of `attention_window` tokens each side
  local_global  ModernBERT: every `global_every`-th layer (0, n, 2n, ...) global, the others local
  linear        kernelised linear attention, softmax replaced by elu(x)+1 feature maps (Katharopoulos et al.,
                2020): linear time and memory in the length; no kernel, bias or window applies

Positions (positions.py) are independent of both: learned or sinusoidal tables in the embeddings, RoPE on
queries and keys before the kernel, ALiBi or T5 buckets as the bias.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from bert_jax.models import dropout as dropout_lib

Array = jax.Array
BiasFn = Callable[[Array, Array], Array]

log = logging.getLogger("bert_jax.attention")


class Tokens(NamedTuple):
  """What attention needs to know about the tokens of a batch, each (batch, length)."""

  valid: Array  # bool: a real token (False: padding, which no query attends to)
  segments: Array | None  # int: packed-document id (tokens attend within their own); None: not packed
  positions: Array  # int: position ids (restart per packed document); used by RoPE


def tokens(
  attention_mask: Array, segment_ids: Array | None = None, position_ids: Array | None = None
) -> Tokens:
  batch, length = attention_mask.shape
  if position_ids is None:
    position_ids = jnp.broadcast_to(jnp.arange(length), (batch, length))
  return Tokens(attention_mask.astype(bool), segment_ids, position_ids)


def visible(valid_k, segments_q, segments_k, q_index, k_index, window) -> Array:
  """(batch, q, k) bool: key k is real, in the query's packed document, and inside the window.

  Every query position, padded or not, attends to all real keys (of its document): bidirectional
  attention exactly as BERT and HuggingFace's BertModel compute it.
  """
  mask = valid_k[:, None, :]
  if segments_q is not None:
    mask = mask & (segments_q[:, :, None] == segments_k[:, None, :])
  if window is not None:
    mask = mask & (jnp.abs(q_index[:, None] - k_index[None, :]) <= window)[None]
  return mask


# --- registries ---------------------------------------------------------------------------------


class Kernel(Protocol):
  def __call__(
    self,
    query: Array,
    key: Array,
    value: Array,
    tokens: Tokens,
    *,
    bias: BiasFn | None = None,
    window: int | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
    block_size: int = 256,
  ) -> Array: ...


_KERNELS: dict[str, Kernel] = {}
_VARIANTS: dict[str, Callable] = {}


def _registrar(table: dict, what: str):
  def register(name: str):
    def wrap(fn):
      if name in table:
        raise ValueError(f"{what} {name!r} is registered twice")
      table[name] = fn
      return fn

    return wrap

  return register


register_kernel = _registrar(_KERNELS, "attention kernel")
register = _registrar(_VARIANTS, "attention")


def get_kernel(name: str) -> Kernel:
  if name not in _KERNELS:
    raise ValueError(
      f"unknown attention_kernel {name!r}; registered attention kernels are {sorted(_KERNELS)}"
    )
  return _KERNELS[name]


def get(name: str):
  if name not in _VARIANTS:
    raise ValueError(f"unknown attention {name!r}; registered attentions are {sorted(_VARIANTS)}")
  return _VARIANTS[name]


def names() -> list[str]:
  return sorted(_VARIANTS)


def kernel_names() -> list[str]:
  return sorted(_KERNELS)


def check(config) -> None:
  """Fails at model construction, naming the fields, for names and combinations that cannot run."""
  get(config.attention)
  get_kernel(config.attention_kernel)
  if config.attention == "linear" and config.position_encoding in ("t5", "alibi", "rope"):
    raise ValueError(
      f"attention='linear' cannot use position_encoding={config.position_encoding!r}: linear attention never "
      "forms the score matrix a bias would be added to; use learned, sinusoidal or none"
    )


def target_platform() -> str:
  """The platform of the program being traced: that of the devices of the mesh in force (`jax.set_mesh`, as
  `train_state.mesh_context` sets it), else `jax.default_backend()`.

  Not `jax.default_backend()` alone: compiling ahead of time for a TPU slice that is not attached (devices
  from `jax.experimental.topologies`) traces on a CPU host, where the default backend is "cpu" and a kernel
  choice made from it would silently compile the fallback into the TPU program. The abstract mesh carries
  its devices' platform, also inside shard_map, scan, cond and remat bodies."""
  device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
  return device.platform if device is not None else jax.default_backend()


_warned: set = set()


def _fallback(kernel: str, to: str, reason: str) -> None:
  if (kernel, to, reason) not in _warned:
    _warned.add((kernel, to, reason))
    log.warning("attention kernel %r falls back to %r: %s", kernel, to, reason)


def _grouped(query: Array, key: Array) -> tuple[int, int, int, int, int]:
  batch, length, heads, depth = query.shape
  kv_heads = key.shape[2]
  if heads % kv_heads:
    raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads (not a divisor)")
  return batch, length, kv_heads, heads // kv_heads, depth


# --- kernels -------------------------------------------------------------------------------------


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

  Measured layout choices (experiments/benchmarks, BENCHMARKS.md): multi-head attention keeps the plain
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
  # kernel, which the bias allows (3.5x faster attention at MiniLM's shape, BENCHMARKS.md). A masked
  # score rounds to the bias exactly (|score| is far below the bias's ulp, 2^103), so a query with no
  # visible key (padding of a packed row) sees all-equal scores: uniform, as softmax.
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
  0.91-1.13x (BENCHMARKS.md). Memory grows linearly with the length instead of quadratically: XLA's CPU
  backend ran the unblocked attention as one library kernel holding every head's whole score matrix (one
  4-head layer at 8,192 tokens: 2,098 MiB resident, 99 MiB blocked). The threshold: isolated attention at
  256 tokens ran 0.7x in blocks (one process, glibc's defaults; not measured in separate processes).
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
  arguments = dict(bias=bias, window=window, block_size=block_size)
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


# --- variants ------------------------------------------------------------------------------------


def _softmax_variant(window_for):
  def variant(query, key, value, tokens, *, config, layer, bias=None, **dropout):
    kernel = get_kernel(config.attention_kernel)
    run = lambda window: kernel(  # noqa: E731
      query, key, value, tokens, bias=bias, window=window, block_size=config.attention_block_size, **dropout
    )
    return window_for(config, layer, run)

  return variant


register("dense")(_softmax_variant(lambda config, layer, run: run(None)))
register("local")(_softmax_variant(lambda config, layer, run: run(config.attention_window)))


def _alternating(config, layer, run):
  if isinstance(layer, int):  # unscanned layers: the choice is static
    return run(None if layer % config.global_every == 0 else config.attention_window)
  # Scanned layers share one body; the layer index is traced, so both branches are compiled.
  return jax.lax.cond(
    layer % config.global_every == 0, lambda: run(None), lambda: run(config.attention_window)
  )


register("local_global")(_softmax_variant(_alternating))


def elu_feature_map(x: Array) -> Array:
  return jax.nn.elu(x.astype(jnp.float32)) + 1.0


@register("linear")
def linear_attention(query, key, value, tokens, *, config=None, layer=None, bias=None, **dropout):
  """φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j) with φ = elu + 1, over the real keys of the query's
  packed document. Costs O(length · head_dim²): the (length, length) matrix is never formed. There is no
  probability matrix, so attention dropout does not apply."""
  if bias is not None:
    raise ValueError("linear attention takes no score bias (ALiBi, T5)")
  batch, length, kv_heads, group, depth = _grouped(query, key)
  q = elu_feature_map(query)
  k = elu_feature_map(key) * tokens.valid[:, :, None, None]
  k, v = (jnp.repeat(x, group, axis=2) if group > 1 else x for x in (k, value.astype(jnp.float32)))
  if tokens.segments is None:
    state = jnp.einsum("blhd,blhe->bhde", k, v)
    normaliser = k.sum(axis=1)
    numerator = jnp.einsum("blhd,bhde->blhe", q, state)
    denominator = jnp.einsum("blhd,bhd->blh", q, normaliser)
  else:
    # One (d, d) state per packed document: documents are summed by id and read back per token.
    ids = (tokens.segments + length * jnp.arange(batch)[:, None]).reshape(-1)
    outer = jnp.einsum("blhd,blhe->blhde", k, v).reshape(batch * length, *k.shape[2:], depth)
    state = jax.ops.segment_sum(outer, ids, num_segments=batch * length)[ids]
    normaliser = jax.ops.segment_sum(
      k.reshape(batch * length, *k.shape[2:]), ids, num_segments=batch * length
    )
    numerator = jnp.einsum("nhd,nhde->nhe", q.reshape(batch * length, *q.shape[2:]), state)
    denominator = jnp.einsum("nhd,nhd->nh", q.reshape(batch * length, *q.shape[2:]), normaliser[ids])
    numerator = numerator.reshape(q.shape)
    denominator = denominator.reshape(q.shape[:3])
  context = numerator / (denominator[..., None] + 1e-6)
  return context.astype(query.dtype)


# The TPU kernels ("pallas", "splash") register themselves from their own module, imported last because it
# builds on this one; `attention.pallas_attention` and `attention.splash_attention` stay importable from here.
from bert_jax.models.tpu_attention import pallas_attention, splash_attention  # noqa: F401
