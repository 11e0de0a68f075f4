"""TrainState, its sharded creation, and the pure train step, jitted once over a mesh.

Creation is shape-first: `jax.eval_shape` gives every array's shape and logical axis names without
allocating; the rules turn names into shardings; `jax.jit(init, out_shardings=...)` then creates
each array directly in its shards, so no device ever holds a full parameter it does not own.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
# packing; BERT's MLM gather; the [CLS] of each packed fine-tuning example
OPTIONAL_MODEL_INPUTS = ("position_ids", "segment_ids", "masked_positions", "cls_positions")


def model_kwargs(batch) -> dict:
  return {k: batch[k] for k in OPTIONAL_MODEL_INPUTS if k in batch}


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


def create_train_state(model, tx, mesh: Mesh, rules, seed: int = 0, seq_len: int = 8, shardings=None):
  """A TrainState created in its shards; returns (state, shardings). Pass `shardings` from
  state_shardings when you already have them."""
  init = _init_fn(model, tx, seq_len)
  if shardings is None:
    _, shardings = state_shardings(model, tx, mesh, rules, seq_len)
  with mesh_context(mesh, rules):
    state = jax.jit(lambda key: nn.meta.unbox(init(key)), out_shardings=shardings)(jax.random.key(seed))
  return state, shardings


def train_step_fn(
  model: nn.Module, tx: optax.GradientTransformation, objective: Callable, accumulation_steps: int = 1
):
  """The pure step: (state, batch) -> (state, metrics). Dropout rng = fold_in(state.rng, step).

  With accumulation_steps = k > 1 the batch is split into k microbatches (rows j, j+k, j+2k, ...: every
  device keeps its own rows, no communication), their gradients averaged in a lax.scan, and one
  optimizer update applied: the memory of a batch k times smaller, the update of the full batch.
  """

  def loss_and_grads(params, batch, rng):
    def loss_fn(params):
      out = model.apply(
        {"params": params},
        *(batch[k] for k in MODEL_INPUTS),
        **model_kwargs(batch),
        deterministic=False,
        rngs={"dropout": rng},
      )
      return objective(out, batch)

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  def step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if accumulation_steps == 1:
      (_, metrics), grads = loss_and_grads(state.params, batch, rng)
    else:
      micro = jax.tree.map(
        lambda x: jnp.moveaxis(
          x.reshape(x.shape[0] // accumulation_steps, accumulation_steps, *x.shape[1:]), 1, 0
        ),
        batch,
      )

      def body(carry, inputs):
        index, microbatch = inputs
        (_, m), g = loss_and_grads(state.params, microbatch, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, carry, (g, m)), None

      zeros = jax.eval_shape(lambda: loss_and_grads(state.params, jax.tree.map(lambda x: x[0], micro), rng))
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zeros[1], zeros[0][1]))
      (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(accumulation_steps), micro))
      grads, metrics = jax.tree.map(lambda x: x / accumulation_steps, (grads, metrics))
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


def make_train_step(
  model, tx, objective, mesh: Mesh, rules, shardings, accumulation_steps: int = 1
) -> ShardedStep:
  batch = sharding_lib.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  return ShardedStep(
    train_step_fn(model, tx, objective, accumulation_steps),
    mesh,
    rules,
    in_shardings=(shardings, batch),
    out_shardings=(shardings, replicated),
    donate_argnums=(0,),
  )


def eval_step_fn(model: nn.Module, objective: Callable):
  """Deterministic forward + the objective's metrics, with the number of predictions they average over
  (so batches of different fill combine into exact means)."""

  def step(params, batch):
    out = model.apply(
      {"params": params},
      *(batch[k] for k in MODEL_INPUTS),
      **model_kwargs(batch),
      deterministic=True,
      rngs={"dropout": jax.random.key(0)},
    )
    _, metrics = objective(out, batch)
    weight = (
      jnp.sum(batch["masked_weights"])
      if "masked_weights" in batch
      else jnp.float32(batch["input_ids"].shape[0])
    )
    return metrics, weight

  return step


def make_eval_step(model, objective, mesh: Mesh, rules, param_shardings) -> ShardedStep:
  replicated = NamedSharding(mesh, PartitionSpec())
  return ShardedStep(
    eval_step_fn(model, objective),
    mesh,
    rules,
    in_shardings=(param_shardings, sharding_lib.batch_sharding(mesh)),
    out_shardings=replicated,
  )


@dataclasses.dataclass
class Trainable:
  """A model with its optimizer and objective, and its train state's abstract shapes and shardings: what a run
  compiles. The runners and compile-only runs (bert_jax/aot.py) build their steps from it, so both compile the
  same programs."""

  model: Any
  tx: Any
  objective: Any
  abstract: Any
  shardings: Any

  def train_step(self, mesh: Mesh, rules, accumulation_steps: int = 1) -> ShardedStep:
    return make_train_step(
      self.model, self.tx, self.objective, mesh, rules, self.shardings, accumulation_steps=accumulation_steps
    )

  def eval_step(self, mesh: Mesh, rules) -> ShardedStep:
    return make_eval_step(self.model, self.objective, mesh, rules, self.shardings.params)
