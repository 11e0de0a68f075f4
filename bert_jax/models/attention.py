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
  (the first three live in attention_kernels.py; the two TPU kernels in tpu_attention.py, run per device
  under jax.shard_map; this module holds the interface, the two registries and the variants)

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
from collections.abc import Callable
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp

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


# --- variants ------------------------------------------------------------------------------------


def _softmax_variant(window_for):
  def variant(query, key, value, tokens, *, config, layer, bias=None, **dropout):
    kernel = get_kernel(config.attention_kernel)
    run = lambda window: kernel(
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
  batch, length, _, group, depth = _grouped(query, key)
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


# The kernels register themselves from their own modules, imported last because they build on this one (so
# `import attention` always finds them registered); they stay importable from here. The XLA kernels come first:
# the TPU kernels fall back to them.
from bert_jax.models.attention_kernels import chunked_attention, dot_product_kernel, xla_attention  # noqa: F401
from bert_jax.models.tpu_attention import pallas_attention, splash_attention  # noqa: F401
