"""Where inference attention's time goes on CPU: the two matmuls alone, then the softmax's passes added one
at a time, against bert_jax's own `xla_attention`, for one layer's shape. Interleaved rounds in one process,
freed memory kept (bert_jax/hostmem.py) as in bench.py; medians.

  .venv/bin/python experiments/benchmarks/attention_parts.py [--batch 2 --length 512 --heads 12 --depth 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import bert_jax  # noqa: E402

bert_jax.hostmem.keep_freed_memory()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bert_jax.models import attention  # noqa: E402


def variants(mask, depth):
  lowest = jnp.finfo(jnp.float32).min

  def heads(q, k, v):  # the projections' (b, q, h, d) to heads first, as xla_attention does
    return q.transpose(0, 2, 1, 3) / np.sqrt(depth), k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)

  def scores(q, k):
    return jnp.einsum("bhqd,bhdk->bhqk", q, k)

  def context(w, v):
    return jnp.einsum("bhqk,bhkd->bhqd", w, v)

  def matmuls(q, k, v):
    q, k, v = heads(q, k, v)
    return context(scores(q, k), v)

  def with_exp(q, k, v):
    q, k, v = heads(q, k, v)
    return context(jnp.exp(scores(q, k) - 30.0), v)

  def with_max(q, k, v):
    q, k, v = heads(q, k, v)
    s = scores(q, k)
    return context(jnp.exp(s - s.max(-1, keepdims=True)), v)

  def with_sum(q, k, v):
    q, k, v = heads(q, k, v)
    s = scores(q, k)
    w = jnp.exp(s - s.max(-1, keepdims=True))
    return context(w, v) / w.sum(-1)[..., None]

  def with_mask(q, k, v):
    q, k, v = heads(q, k, v)
    s = scores(q, k) + jnp.where(mask.astype(bool)[:, None, None, :], 0.0, lowest)
    w = jnp.exp(s - s.max(-1, keepdims=True))
    return context(w, v) / w.sum(-1)[..., None]

  def bert_jax_attention(q, k, v):
    return attention.xla_attention(q, k, v, attention.tokens(mask))

  return {
    "Q·Kᵀ and P·V alone": matmuls,
    "+ exp": with_exp,
    "+ row max": with_max,
    "+ row sum, division": with_sum,
    "+ mask (the full softmax)": with_mask,
    "bert_jax xla_attention": bert_jax_attention,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--length", type=int, default=512)
  p.add_argument("--heads", type=int, default=12)
  p.add_argument("--depth", type=int, default=64)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--iters", type=int, default=20)
  args = p.parse_args(argv)
  b, n, h, d = args.batch, args.length, args.heads, args.depth
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((b, n, h, d), np.float32)) for _ in range(3))
  mask = jnp.ones((b, n), jnp.int32)
  compiled = {name: jax.jit(f) for name, f in variants(mask, d).items()}
  for f in compiled.values():
    jax.block_until_ready(f(q, k, v))
  times: dict[str, list[float]] = {name: [] for name in compiled}
  for _ in range(args.rounds):
    for name, f in compiled.items():
      for _ in range(args.iters):
        start = time.perf_counter()
        jax.block_until_ready(f(q, k, v))
        times[name].append(time.perf_counter() - start)
  flops = 4 * b * h * n * n * d
  print(f"attention of one layer, batch {b}, length {n}, {h} heads of {d}; {flops / 1e9:.2f} GFLOP")
  print("| variant | median ms | GFLOP/s |\n|---|---:|---:|")
  for name, ts in times.items():
    median = float(np.median(ts))
    print(f"| {name} | {median * 1e3:.2f} | {flops / median / 1e9:.0f} |")


if __name__ == "__main__":
  main()
