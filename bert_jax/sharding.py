"""Device meshes and the logical-axis rules that map the model's axis names onto them.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data parallelism with parameters and
optimizer state sharded, ZeRO-3) and `tensor` (Megatron-style: attention heads and the MLP's hidden
units split across devices). The batch is split over data x fsdp. A strategy is a rules table; the
mesh shape says how many devices each axis gets. This file is the only place rules live.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
LOGICAL_AXES = ("batch", "length", "embed", "mlp", "heads", "kv_heads", "kv", "vocab", "layers")

# Rules are tried in order for each logical axis; a mesh axis already used by an earlier dimension
# of the same array is skipped. So ("embed", "fsdp") shards parameters' embed dimension under FSDP,
# while activations, whose batch dimension already took fsdp, keep embed whole.
_BATCH = [("batch", BATCH_AXES)]
_FSDP = [("embed", "fsdp")]
# The vocabulary (30522 for BERT, 2 x 3 x 5087) rarely divides a tensor axis: embeddings stay whole
# along vocab; they are sharded along embed under FSDP.
_TENSOR = [("heads", "tensor"), ("mlp", "tensor")]
# kv_heads: grouped/multi-query attention's key/value heads, often fewer than tensor shards: replicated.
_REPLICATED = [
  (name, None) for name in ("length", "embed", "mlp", "heads", "kv_heads", "kv", "vocab", "layers")
]

STRATEGIES: dict[str, tuple[tuple[str, Any], ...]] = {
  "dp": tuple(_BATCH + _REPLICATED),
  "fsdp": tuple(_BATCH + _FSDP + _REPLICATED),
  "tp": tuple(_BATCH + _TENSOR + _REPLICATED),
  "fsdp_tp": tuple(_BATCH + _FSDP + _TENSOR + _REPLICATED),
}


class ShardingError(ValueError):
  pass


def rules_for(strategy: str, overrides: Sequence[Sequence[Any]] = ()) -> tuple[tuple[str, Any], ...]:
  """The rules table of a strategy; `overrides` ((logical, mesh axes), ...) take precedence."""
  if strategy not in STRATEGIES:
    raise ShardingError(f"unknown sharding strategy {strategy!r}; known: {sorted(STRATEGIES)}")
  rules = [(str(name), _mesh_axes(target)) for name, target in overrides] + list(STRATEGIES[strategy])
  for name, target in rules:
    if name not in LOGICAL_AXES:
      raise ShardingError(
        f"sharding rule for unknown logical axis {name!r}; logical axes are {list(LOGICAL_AXES)}"
      )
    for axis in (target,) if isinstance(target, str) else (target or ()):
      if axis not in MESH_AXES:
        raise ShardingError(
          f"sharding rule {name!r} -> {target!r} names unknown mesh axis {axis!r}; "
          f"mesh axes are {list(MESH_AXES)}"
        )
  return tuple(rules)


def _mesh_axes(target):
  if target is None or isinstance(target, str):
    return target
  return tuple(target)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves the one `-1` axis (if any) so that the axes multiply to `num_devices`."""
  unknown = sorted(set(mesh_config) - set(MESH_AXES))
  if unknown:
    raise ShardingError(f"mesh config has unknown axes {unknown}; mesh axes are {list(MESH_AXES)}")
  shape = {axis: int(mesh_config.get(axis, 1)) for axis in MESH_AXES}
  free = [axis for axis, size in shape.items() if size == -1]
  if len(free) > 1 or any(size == 0 or size < -1 for size in shape.values()):
    raise ShardingError(
      f"mesh {shape}: each axis needs a positive size, and at most one may be -1 (the rest)"
    )
  fixed = math.prod(size for size in shape.values() if size != -1)
  if free:
    if num_devices % fixed:
      raise ShardingError(
        f"mesh {shape}: the fixed axes take {fixed} devices, which does not divide the "
        f"{num_devices} devices present"
      )
    shape[free[0]] = num_devices // fixed
  if math.prod(shape.values()) != num_devices:
    raise ShardingError(
      f"mesh {_fmt(shape)} needs {math.prod(shape.values())} devices but {num_devices} are "
      "present; change the mesh sizes (or set one axis to -1 to take the rest)"
    )
  return shape


def _fmt(shape):
  return " x ".join(f"{axis}={size}" for axis, size in shape.items())


def make_mesh(
  mesh_config: Mapping[str, int],
  devices: Sequence[jax.Device] | None = None,
  dcn: Mapping[str, int] | None = None,
) -> Mesh:
  """A Mesh over `devices` (default: all). `dcn` gives, per axis, how many slices (or hosts joined by
  the data-center network) it spans: a hybrid mesh keeps fast intra-slice links inside each slice."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  dcn_shape = {axis: int((dcn or {}).get(axis, 1)) for axis in MESH_AXES}
  if math.prod(dcn_shape.values()) > 1:
    for axis in MESH_AXES:
      if shape[axis] % dcn_shape[axis]:
        raise ShardingError(
          f"mesh axis {axis}={shape[axis]} is not divisible by its DCN size {dcn_shape[axis]}"
        )
    ici = [shape[a] // dcn_shape[a] for a in MESH_AXES]
    # Multi-slice TPU devices know their slice; elsewhere (GPU nodes, CPU hosts: one slice) a process
    # is the unit the data-center network joins.
    per_process = len({getattr(d, "slice_index", 0) for d in devices}) == 1
    try:
      array = mesh_utils.create_hybrid_device_mesh(
        ici, [dcn_shape[a] for a in MESH_AXES], devices, process_is_granule=per_process
      )
    except ValueError as e:
      granules = "processes" if per_process else "slices"
      raise ShardingError(
        f"cannot build a hybrid mesh with DCN sizes {dcn_shape} over {granules} of "
        f"{len(devices)} devices: {e}"
      ) from None
  else:
    try:
      array = mesh_utils.create_device_mesh([shape[a] for a in MESH_AXES], devices)
    except (ValueError, NotImplementedError, AssertionError):
      # No topology-aware layout for this shape (e.g. simulated CPU devices): keep device order.
      array = np.asarray(devices).reshape([shape[a] for a in MESH_AXES])
  # Mesh() gives Auto axis types, which linen's logical constraints need (jax.make_mesh defaults to Explicit).
  return Mesh(array, MESH_AXES)


def logical_sharding(logical_specs, mesh: Mesh, rules) -> Any:
  """A tree of logical PartitionSpecs -> NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches split along their leading dimension over data x fsdp."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(
  global_batch_size: int, mesh: Mesh, process_count: int | None = None, accumulation_steps: int = 1
) -> int:
  """Checks that the global batch splits over the mesh, the processes and the gradient-accumulation
  microbatches; returns the per-process batch."""
  process_count = jax.process_count() if process_count is None else process_count
  shards = data_parallel_size(mesh)
  if global_batch_size % shards:
    raise ShardingError(
      f"global batch size {global_batch_size} does not divide over the mesh's data x fsdp = {shards} "
      f"batch shards; use a multiple of {shards} (e.g. {shards * max(1, round(global_batch_size / shards))})"
    )
  per_shard = global_batch_size // shards
  if per_shard % accumulation_steps:
    # Each microbatch must keep at least one row on every batch shard, or devices would trade rows
    # (and XLA's partitioner has been seen to miscompute gradients for such uneven microbatches).
    raise ShardingError(
      f"global batch size {global_batch_size} gives {per_shard} rows per batch shard (data x fsdp = {shards}), "
      f"which {accumulation_steps} accumulation microbatches cannot split evenly; use a global batch that is a "
      f"multiple of {shards * accumulation_steps} or fewer accumulation steps"
    )
  if global_batch_size % process_count:
    raise ShardingError(
      f"global batch size {global_batch_size} does not divide over {process_count} processes; "
      f"use a multiple of {process_count}"
    )
  return global_batch_size // process_count


def check_divisible(shapes, shardings) -> None:
  """Raises, naming the parameter, where a sharded dimension does not divide by its mesh axes."""
  problems = []
  for path, (shape, sharding) in _zip_with_path(shapes, shardings):
    spec = sharding.spec
    for dim, axes in zip(shape.shape, tuple(spec) + (None,) * (len(shape.shape) - len(spec))):
      if axes is None:
        continue
      size = math.prod(sharding.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      if dim % size:
        problems.append(f"{path}: dimension {dim} over {axes} ({size} devices)")
  if problems:
    raise ShardingError(
      "parameters do not divide over the mesh: "
      + "; ".join(problems[:6])
      + "; change the mesh sizes or the model dimensions"
    )


def _zip_with_path(shapes, shardings):
  flat_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  flat_shardings = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, shape), sharding in zip(flat_shapes, flat_shardings):
    yield jax.tree_util.keystr(path), (shape, sharding)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Each process passes its own rows; the result is one global array per field, split over
  data x fsdp, without any process holding the whole batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def process_rows(mesh: Mesh, global_batch_size: int) -> slice:
  """The rows of a global batch that this process feeds: those its devices hold under the batch
  sharding. Each process reads only these rows of the data."""
  local = check_batch(global_batch_size, mesh)
  indices = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
  starts = sorted({(idx[0].start or 0) for idx in indices.values()})
  stops = sorted(
    {(idx[0].stop if idx[0].stop is not None else global_batch_size) for idx in indices.values()}
  )
  first, last = starts[0], stops[-1]
  if last - first != local:
    raise ShardingError(
      f"this process's devices hold rows {first}:{last} of the batch, not one contiguous "
      f"block of {local}; build the mesh with each process's devices adjacent along data x fsdp"
    )
  return slice(first, last)


def from_config(mesh_config, devices: Sequence[jax.Device] | None = None) -> tuple[Mesh, tuple]:
  """(mesh, rules) from a config's `mesh` block (configs/common.py: mesh_config)."""
  mesh = make_mesh(
    {a: mesh_config[a] for a in MESH_AXES}, devices, dcn={a: mesh_config[f"dcn_{a}"] for a in MESH_AXES}
  )
  return mesh, rules_for(mesh_config.strategy, mesh_config.rules)
