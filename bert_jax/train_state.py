"""TrainState, its sharded creation, and the pure train step, jitted once over a mesh.

Creation is shape-first: `jax.eval_shape` gives every array's shape and logical axis names without
allocating; the rules turn names into shardings; `jax.jit(init, out_shardings=...)` then creates
each array directly in its shards, so no device ever holds a full parameter it does not own.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax import sharding as sharding_lib

# The model inputs a train step reads; anything else in the batch goes to the objective only.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key data: shardable and checkpointable like any array


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules):
  """Mesh and logical rules in force while tracing: the model's activation constraints read them."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, seq_len: int):
  def init(key):
    params_key, dropout_key, state_key = jax.random.split(key, 3)
    ids = jnp.zeros((1, seq_len), jnp.int32)
    params = model.init({"params": params_key, "dropout": dropout_key}, ids)["params"]
    # Boxed (logically named) params through tx.init give optimizer state with the same names.
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      rng=jax.random.key_data(state_key),
    )

  return init


def state_shardings(model, tx, mesh: Mesh, rules, seq_len: int = 8):
  """(abstract unboxed TrainState, its NamedShardings) without allocating anything."""
  init = _init_fn(model, tx, seq_len)
  abstract = jax.eval_shape(init, jax.random.key(0))
  logical = nn.get_partition_spec(abstract)
  shardings = sharding_lib.logical_sharding(logical, mesh, rules)
  unboxed = nn.meta.unbox(abstract)
  sharding_lib.check_divisible(unboxed, shardings)
  return unboxed, shardings


def create_train_state(model, tx, mesh: Mesh, rules, seed: int = 0, seq_len: int = 8):
  """A TrainState created in its shards; returns (state, shardings)."""
  init = _init_fn(model, tx, seq_len)
  _, shardings = state_shardings(model, tx, mesh, rules, seq_len)
  with mesh_context(mesh, rules):
    state = jax.jit(lambda key: nn.meta.unbox(init(key)), out_shardings=shardings)(jax.random.key(seed))
  return state, shardings


def train_step_fn(model: nn.Module, tx: optax.GradientTransformation, objective: Callable):
  """The pure step: (state, batch) -> (state, metrics). Dropout rng = fold_in(state.rng, step)."""

  def step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      out = model.apply(
        {"params": params},
        *(batch[k] for k in MODEL_INPUTS),
        masked_positions=batch.get("masked_positions"),
        deterministic=False,
        rngs={"dropout": rng},
      )
      return objective(out, batch)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


class ShardedStep:
  """A function jitted once with explicit shardings, called with its mesh and rules in force.

  Input state buffers are donated: the updated state reuses their memory.
  """

  def __init__(self, fn, mesh: Mesh, rules, in_shardings, out_shardings, donate_argnums=()):
    self.mesh, self.rules = mesh, rules
    self._jitted = jax.jit(
      fn, in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=donate_argnums
    )

  def __call__(self, *args):
    with mesh_context(self.mesh, self.rules):
      return self._jitted(*args)

  def compilations(self) -> int:
    """How many distinct compilations the jitted function holds (1 for a healthy training loop)."""
    return self._jitted._cache_size()


def make_train_step(model, tx, objective, mesh: Mesh, rules, shardings) -> ShardedStep:
  batch = sharding_lib.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  return ShardedStep(
    train_step_fn(model, tx, objective),
    mesh,
    rules,
    in_shardings=(shardings, batch),
    out_shardings=(shardings, replicated),
    donate_argnums=(0,),
  )
