"""The TPU attention kernels (bert_jax/models/tpu_attention.py): which platform they compile for, how they split
over a mesh, their gradients under shard_map in Pallas' interpreter against `xla`, and TPU programs compiled
ahead of time for a v5e:2x2 slice that is not attached (libtpu, a test requirement, describes its chips).
Numerics without a mesh are in test_attention.py (test_every_kernel_matches_the_reference)."""

from __future__ import annotations

import contextlib
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import sharding
from bert_jax.models import BertConfig, BertModel, attention, positions, tpu_attention

P = PartitionSpec


@pytest.fixture(scope="module")
def tpu_devices():
  """The four chips of a v5e:2x2 slice, compile-only: a Mesh over them makes jit compile for TPU here."""
  # libtpu lets one process at a time hold a machine's TPU; with none attached there is nothing to guard.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies

  return list(topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2").devices)


def _mesh(shape, devices=None):
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices[: int(np.prod(shape))]).reshape(shape), sharding.MESH_AXES)


@contextlib.contextmanager
def _context(mesh, strategy):
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules_for(strategy)):
    yield


def _inputs(batch=4, length=37, heads=4, kv_heads=2, depth=8, seed=0):
  """Random float32 q, k, v; two documents packed in every row; row 1 (or the only one) ends in padding."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(batch, length, heads, depth)).astype(np.float32)
  k, v = (rng.normal(size=(batch, length, kv_heads, depth)).astype(np.float32) for _ in range(2))
  valid = np.ones((batch, length), bool)
  valid[min(1, batch - 1), length - length // 4 :] = False
  segments = np.ones((batch, length), np.int32)
  segments[:, length // 2 :] = 2
  segments[~valid] = 0
  return q, k, v, valid, segments


def test_the_platform_is_that_of_the_meshs_devices(tpu_devices):
  """Kernels choose by the devices the program is compiled for, not the process's default backend: "tpu"
  while tracing for the v5e mesh on this CPU machine, in jit and shard_map bodies; the default backend
  without a mesh."""
  assert attention.target_platform() == jax.default_backend() == "cpu"
  with jax.set_mesh(_mesh((1, 2, 1))):
    assert attention.target_platform() == "cpu"
  seen = []

  def f(x):
    seen.append(attention.target_platform())
    spec = P(("data", "fsdp"))
    body = lambda x: seen.append(attention.target_platform()) or x
    return jax.shard_map(body, in_specs=spec, out_specs=spec, check_vma=False)(x)

  mesh = _mesh((1, 4, 1), tpu_devices)
  with jax.set_mesh(mesh):
    assert attention.target_platform() == "tpu"
    jax.jit(f).lower(jax.ShapeDtypeStruct((8,), jnp.float32, sharding=NamedSharding(mesh, P("fsdp"))))
  assert seen == ["tpu", "tpu"] and jax.default_backend() == "cpu"


@pytest.mark.parametrize(
  "strategy, shape, batch, heads, kv_heads, local_q, local_kv",
  [
    ("dp", (8, 1, 1), 8, 4, 2, (1, 4), (1, 2)),
    ("fsdp", (2, 4, 1), 8, 4, 2, (1, 4), (1, 2)),
    ("fsdp", (2, 4, 1), 1, 4, 2, (1, 4), (1, 2)),  # a batch of one (initialisation) stays whole
    ("tp", (4, 1, 2), 8, 4, 2, (2, 2), (2, 1)),  # key/value heads split with the query heads
    ("tp", (2, 1, 4), 8, 4, 2, (4, 1), (4, 1)),  # two query heads per key/value head: each device takes one
    ("fsdp_tp", (1, 4, 2), 8, 4, 1, (2, 2), (2, 1)),  # multi-query: the one key/value head everywhere
    ("fsdp_tp", (1, 4, 2), 8, 6, 3, (2, 3), (2, 3)),  # 3 query heads per device read 2 of 3 kv heads
  ],
)
def test_each_device_gets_its_batch_rows_and_heads(
  strategy, shape, batch, heads, kv_heads, local_q, local_kv
):
  """`_per_device` splits the batch and heads as the rules in force do and gives each device the key/value
  heads its query heads read: q + K repeated per group, per device, equals the same on whole arrays."""
  q, k, v, valid, _ = _inputs(batch=batch, heads=heads, kv_heads=kv_heads, length=5)
  ids = np.zeros(valid.shape, np.int32)
  shapes = []

  def local(q, k, v, ids, bias):
    shapes.append((q.shape[0], q.shape[2], k.shape[0], k.shape[2]))
    return q + jnp.repeat(k, q.shape[2] // k.shape[2], axis=2)

  with _context(_mesh(shape), strategy):
    got = jax.jit(lambda *a: tpu_attention._per_device(local, *a))(q, k, v, ids)
  assert shapes == [(local_q[0], local_q[1], local_kv[0], local_kv[1])]
  np.testing.assert_array_equal(np.asarray(got), q + np.repeat(k, heads // kv_heads, axis=2))


def _grads(kernel, q, k, v, tokens, weights, **options):
  def loss(q, k, v):
    return jnp.sum(kernel(q, k, v, tokens, **options) * weights)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize(
  "strategy, shape, kv_heads",
  [("tp", (2, 1, 4), 2), ("fsdp_tp", (2, 2, 2), 1)],
  ids=["tp-gqa", "fsdp_tp-mqa"],
)
def test_splash_per_device_gradients_match_xla(strategy, shape, kv_heads):
  """Splash attention in Pallas' interpreter on 8 CPU devices, batch and heads split: a 20-token window over
  300 tokens (three 128-token blocks each way, so the kernel skips blocks outside the band), packed documents
  and padding; the loss over real tokens and its gradients equal `xla`'s."""
  q, k, v, valid, segments = _inputs(length=300, kv_heads=kv_heads)
  tokens = attention.tokens(jnp.asarray(valid), jnp.asarray(segments))
  weights = np.random.default_rng(1).normal(size=q.shape).astype(np.float32) * valid[..., None, None]
  with _context(_mesh(shape), strategy):
    got = _grads(attention.get_kernel("splash"), q, k, v, tokens, weights, window=20, interpret=True)
    want = _grads(attention.xla_attention, q, k, v, tokens, weights, window=20)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for g, w in zip(got[1], want[1]):
    np.testing.assert_allclose(g, w, atol=2e-5)


def test_pallas_per_device_gradients_match_xla():
  """The flash kernel in Pallas' TPU interpreter, heads split over 2 CPU devices, grouped key/value heads,
  an ALiBi bias (split with the heads), packing and padding: loss and gradients equal `xla`'s. Two devices:
  the TPU interpreter synchronises all devices at every kernel, which hung with 8 devices on a 2-core host;
  its backward kernels are traced by jax.grad, so the interpreter mode encloses the whole differentiation."""
  from jax.experimental.pallas import tpu as pltpu

  q, k, v, valid, segments = _inputs(batch=2)
  tokens = attention.tokens(jnp.asarray(valid), jnp.asarray(segments))
  weights = np.random.default_rng(1).normal(size=q.shape).astype(np.float32) * valid[..., None, None]
  bias = positions.alibi_bias(positions.alibi_slopes(4))
  with _context(_mesh((1, 1, 2)), "tp"):
    with pltpu.force_tpu_interpret_mode():
      got = _grads(attention.get_kernel("pallas"), q, k, v, tokens, weights, bias=bias, interpret=True)
    want = _grads(attention.xla_attention, q, k, v, tokens, weights, bias=bias)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for g, w in zip(got[1], want[1]):
    np.testing.assert_allclose(g, w, atol=2e-5)


# --- compiled for TPU -----------------------------------------------------------------------------

MESHES = {"dp": (4, 1, 1), "fsdp": (1, 4, 1), "tp": (2, 1, 2), "fsdp_tp": (1, 2, 2)}


def _kernel_calls(compiled) -> list[str]:
  return [line for line in compiled.as_text().splitlines() if 'custom_call_target="tpu_custom_call"' in line]


@pytest.mark.parametrize("strategy", sorted(MESHES))
def test_kernels_compile_for_tpu_per_device(strategy, tpu_devices, caplog):
  """Both kernels' forward and backward under every strategy, compiled for v5e:2x2 from this CPU process:
  Mosaic kernels (tpu_custom_call) on per-device shapes (batch 8 split over data x fsdp, 4 heads over
  tensor, 200 tokens padded to 256), no fallback taken. Without shard_map this fails to lower ("Mosaic
  kernels cannot be automatically partitioned")."""
  mesh = _mesh(MESHES[strategy], tpu_devices)
  batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  head_shards = mesh.shape["tensor"] if strategy in ("tp", "fsdp_tp") else 1
  rows = NamedSharding(mesh, P(sharding.BATCH_AXES))
  q = jax.ShapeDtypeStruct((8, 200, 4, 64), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((8, 200, 2, 64), jnp.bfloat16)
  valid = jax.ShapeDtypeStruct((8, 200), jnp.bool_, sharding=rows)
  local = f"bf16[{8 // batch_shards},{4 // head_shards},256,64]"
  with caplog.at_level("WARNING", logger="bert_jax.attention"), _context(mesh, strategy):
    for name, window in (("pallas", None), ("splash", 32)):

      def loss(q, k, v, valid, name=name, window=window):
        out = attention.get_kernel(name)(q, k, v, attention.tokens(valid), window=window)
        return jnp.sum(out.astype(jnp.float32))

      compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv, valid).compile()
      calls = _kernel_calls(compiled)
      assert len(calls) == 3, name  # forward, and the backward's two kernels
      assert all(local in call for call in calls), (name, local, calls[0][:300])
  assert "falls back" not in caplog.text and jax.default_backend() == "cpu"


@pytest.mark.parametrize(
  "strategy, overrides, kernels",
  [
    ("fsdp", dict(attention_kernel="pallas"), 2 * 3),
    # scanned layers run both branches of local_global's lax.cond (splash's full and local masks), each
    # forward again in the backward pass (remat): 2 x (1 + 1 + 2) kernels
    (
      "tp",
      dict(
        attention_kernel="splash",
        attention="local_global",
        global_every=2,
        attention_window=32,
        scan_layers=True,
        remat="full",
        num_kv_heads=1,
      ),
      8,
    ),
  ],
  ids=["fsdp-pallas", "tp-splash-local_global-scanned-remat"],
)
def test_a_tiny_bert_compiles_for_tpu_with_mosaic_kernels(strategy, overrides, kernels, tpu_devices, caplog):
  """A 2-layer BERT's forward and gradient, parameters and batch sharded by the strategy's rules, compiled for
  v5e:2x2: the attention runs as Mosaic kernels while jax.default_backend() is "cpu"."""
  config = BertConfig(
    vocab_size=128,
    hidden_size=128,
    num_layers=2,
    num_heads=2,
    mlp_dim=256,
    max_position_embeddings=128,
    dtype="bfloat16",
    attention_dropout_rate=0.0,
    **overrides,
  )
  model = BertModel(config, with_pooler=False)
  mesh = _mesh(MESHES[strategy], tpu_devices)
  rules = sharding.rules_for(strategy)
  key, ids = jax.random.key(0), jnp.ones((1, 8), jnp.int32)  # concrete arrays: made before the TPU mesh
  with caplog.at_level("WARNING", logger="bert_jax.attention"):
    with _context(mesh, strategy):
      shapes = jax.eval_shape(model.init, key, ids)
    params = jax.tree.map(  # unboxed outside the rules, which would constrain these shapes
      lambda s, where: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=where),
      nn.unbox(shapes),
      nn.logical_to_mesh_sharding(nn.get_partition_spec(shapes), mesh, rules),
    )
    rows = jax.ShapeDtypeStruct((8, 128), jnp.int32, sharding=NamedSharding(mesh, P(sharding.BATCH_AXES)))

    def loss(params, ids, mask):
      return jnp.sum(model.apply(params, ids, mask)["last_hidden_state"].astype(jnp.float32))

    with _context(mesh, strategy):
      compiled = jax.jit(jax.grad(loss)).lower(params, rows, rows).compile()
  assert len(_kernel_calls(compiled)) == kernels
  assert "falls back" not in caplog.text and jax.default_backend() == "cpu"
  assert re.search(r"splash_mha|flash_attention", compiled.as_text())
