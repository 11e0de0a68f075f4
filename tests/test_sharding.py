"""Meshes, strategies and sharded training on 8 simulated CPU devices."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from bert_jax import sharding, train_state
from bert_jax.models import BertForPreTraining
from configs import common
from tests import helpers

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "golden", "partition_specs_bert_base.json")
STRATEGY_MESHES = {
  "dp": {"data": -1},
  "fsdp": {"fsdp": -1},
  "tp": {"data": 2, "tensor": 4},
  "fsdp_tp": {"fsdp": 4, "tensor": 2},
}
STEPS = 3


def gradients(mesh, strategy, batch):
  """Gradients of the first step's loss, computed under the strategy's shardings."""
  model, tx, objective = helpers.tiny_training()
  rules = sharding.rules_for(strategy)
  state, shardings = train_state.create_train_state(model, tx, mesh, rules, seed=0)

  def grad_fn(params, batch):
    def loss(p):
      out = model.apply(
        {"params": p},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        masked_positions=batch["masked_positions"],
      )
      return objective(out, batch)[0]

    return jax.grad(loss)(params)

  fn = train_state.ShardedStep(
    grad_fn,
    mesh,
    rules,
    in_shardings=(shardings.params, sharding.batch_sharding(mesh)),
    out_shardings=shardings.params,
  )
  return jax.device_get(fn(state.params, sharding.global_batch(batch, mesh)))


@pytest.fixture(scope="module")
def batches():
  return helpers.pretraining_batches(STEPS)


@pytest.fixture(scope="module")
def single_device(batches):
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  state, losses, _ = helpers.train_steps(mesh, "dp", batches)
  return state, losses, gradients(mesh, "dp", batches[0])


@pytest.mark.parametrize("strategy", list(STRATEGY_MESHES))
def test_strategy_matches_one_device(strategy, batches, single_device):
  """Same losses, gradients and updated params (dropout on) as one device, and one compilation."""
  mesh = sharding.make_mesh(STRATEGY_MESHES[strategy])
  assert mesh.devices.size == 8
  state, losses, step = helpers.train_steps(mesh, strategy, batches)
  ref_state, ref_losses, ref_grads = single_device
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  helpers.assert_params_close(state.params, ref_state.params)
  helpers.assert_params_close(gradients(mesh, strategy, batches[0]), ref_grads)
  assert int(state.step) == STEPS
  assert step.compilations() == 1


def test_params_are_sharded_as_the_strategy_says():
  model, tx, _ = helpers.tiny_training()
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  state, _ = train_state.create_train_state(model, tx, mesh, sharding.rules_for("fsdp_tp"))
  kernel = state.params["bert"]["encoder"]["layer_0"]["mlp"]["intermediate"]["kernel"]  # (embed, mlp)
  assert kernel.sharding.spec == PartitionSpec("fsdp", "tensor")
  assert {s.data.shape for s in kernel.addressable_shards} == {(64 // 4, 128 // 2)}
  mu = state.opt_state[1][0].mu["bert"]["encoder"]["layer_0"]["mlp"]["intermediate"]["kernel"]
  assert mu.sharding.spec == PartitionSpec("fsdp", "tensor")


def _golden_specs():
  model = BertForPreTraining(common.bert_config(common.model_config("base")))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  logical = nn.get_partition_spec(abstract)["params"]
  out = {}
  for strategy in STRATEGY_MESHES:
    specs = nn.logical_to_mesh(logical, sharding.rules_for(strategy))
    out[strategy] = {
      path: [list(a) if isinstance(a, tuple) else a for a in spec]
      for path, spec in helpers.flat_params(
        jax.tree.map(
          lambda s: np.array(s, dtype=object), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
        )
      ).items()
    }
  return out


def test_golden_partition_specs_bert_base():
  """The partition spec of every BERT-base parameter under each strategy, against a reviewed file.
  Regenerate with BERT_JAX_REGEN_GOLDEN=1 after an intended change, and review the diff."""
  specs = json.loads(json.dumps(_golden_specs()))
  if os.environ.get("BERT_JAX_REGEN_GOLDEN"):
    with open(GOLDEN, "w") as f:
      json.dump(specs, f, indent=1, sort_keys=True)
  with open(GOLDEN) as f:
    assert specs == json.load(f)


def test_fsdp_divides_param_and_optimizer_bytes():
  """BERT-base params + AdamW state under fsdp=8: each device holds total / 8, up to what stays
  replicated (tensors with no embed axis: the vocabulary bias, NSP bias, step counters)."""
  model = BertForPreTraining(common.bert_config(common.model_config("base")))
  from bert_jax import optim

  tx = optim.make_optimizer(common.optimizer_config("adamw", warmup_steps=10, total_steps=100))
  mesh = sharding.make_mesh({"fsdp": -1})
  state, _ = train_state.create_train_state(model, tx, mesh, sharding.rules_for("fsdp"))
  arrays = jax.tree.leaves((state.params, state.opt_state))
  total = sum(a.nbytes for a in arrays)
  per_device = {d: 0 for d in mesh.devices.flat}
  replicated = 0
  for a in arrays:
    for shard in a.addressable_shards:
      per_device[shard.device] += shard.data.nbytes
    if a.sharding.is_fully_replicated:
      replicated += a.nbytes
  assert total > 3 * 109e6 * 4  # params, mu and nu of BERT-base with heads, float32
  assert replicated < 0.001 * total
  for device, nbytes in per_device.items():
    assert nbytes == pytest.approx(total / 8 + replicated * 7 / 8, rel=1e-9), device
  del state


def test_mesh_errors():
  with pytest.raises(sharding.ShardingError, match="needs 16 devices but 8 are present"):
    sharding.make_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(sharding.ShardingError, match="at most one may be -1"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(sharding.ShardingError, match=r"fixed axes take 3 devices, which does not divide the 8"):
    sharding.make_mesh({"data": -1, "tensor": 3})
  with pytest.raises(sharding.ShardingError, match=r"unknown axes \['model'\]"):
    sharding.make_mesh({"model": 2})
  assert dict(sharding.make_mesh({"data": 2, "fsdp": -1}).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  # A hybrid (multi-slice / multi-node) mesh needs as many slices or processes as its DCN sizes say;
  # tests/test_multiprocess.py builds one over 2 processes.
  with pytest.raises(sharding.ShardingError, match="cannot build a hybrid mesh with DCN sizes"):
    sharding.make_mesh({"data": 2, "fsdp": 4}, dcn={"data": 2})
  with pytest.raises(sharding.ShardingError, match="fsdp=4 is not divisible by its DCN size 3"):
    sharding.make_mesh({"data": 2, "fsdp": 4}, dcn={"fsdp": 3})


def test_rule_errors():
  with pytest.raises(
    sharding.ShardingError, match=r"unknown sharding strategy 'zero'; known: \['dp', 'fsdp'"
  ):
    sharding.rules_for("zero")
  with pytest.raises(sharding.ShardingError, match="unknown logical axis 'hidden'"):
    sharding.rules_for("dp", [("hidden", "fsdp")])
  with pytest.raises(sharding.ShardingError, match="names unknown mesh axis 'model'"):
    sharding.rules_for("dp", [("mlp", "model")])
  rules = sharding.rules_for("dp", [("mlp", "tensor")])
  assert nn.logical_to_mesh_axes(("embed", "mlp"), rules) == PartitionSpec(None, "tensor")


def test_batch_and_shape_errors_come_before_compilation():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  with pytest.raises(
    sharding.ShardingError,
    match=r"global batch size 12 does not divide over the mesh's data x "
    r"fsdp = 8 batch shards; use a multiple of 8",
  ):
    sharding.check_batch(12, mesh)
  with pytest.raises(sharding.ShardingError, match="does not divide over 3 processes"):
    sharding.check_batch(16, mesh, process_count=3)
  assert sharding.check_batch(16, mesh) == 16 and sharding.process_rows(mesh, 16) == slice(0, 16)
  model, tx, _ = helpers.tiny_training()
  odd = BertForPreTraining(model.config.replace(hidden_size=36, num_heads=6))
  with pytest.raises(
    sharding.ShardingError, match=r"parameters do not divide over the mesh: .*dimension 36 over fsdp"
  ):
    train_state.state_shardings(odd, tx, sharding.make_mesh({"fsdp": 8}), sharding.rules_for("fsdp"))


def test_activation_constraints_follow_the_rules():
  """The model's logical constraints reach the compiled program: under fsdp_tp the MLP activation
  is split over batch (data x fsdp) and mlp (tensor)."""
  model, tx, objective = helpers.tiny_training()
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  rules = sharding.rules_for("fsdp_tp")
  state, shardings = train_state.create_train_state(model, tx, mesh, rules)
  batch = sharding.global_batch(helpers.pretraining_batches(1)[0], mesh)
  fn = lambda p, b: model.apply({"params": p}, b["input_ids"], b["attention_mask"], b["token_type_ids"])
  with train_state.mesh_context(mesh, rules):
    text = jax.jit(fn).lower(state.params, batch).as_text()
  assert '{"data", "fsdp"}, {}, {"tensor"}' in text


def test_mesh_from_config():
  config = common.mesh_config("fsdp_tp", data=-1, fsdp=2, tensor=2)
  mesh, rules = sharding.from_config(config)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert nn.logical_to_mesh_axes(("embed", "mlp"), rules) == PartitionSpec("fsdp", "tensor")
  config.rules = (("vocab", "tensor"),)
  assert nn.logical_to_mesh_axes(("vocab", "embed"), sharding.from_config(config)[1]) == PartitionSpec(
    "tensor", "fsdp"
  )
  # the same config on one device
  mesh, _ = sharding.from_config(common.mesh_config("fsdp", data=-1), jax.devices()[:1])
  assert mesh.devices.size == 1


def test_checkpoint_restores_on_another_mesh_and_on_one_device(tmp_path, batches):
  from bert_jax import checkpointing

  mesh = sharding.make_mesh({"fsdp": 8})
  state, _, _ = helpers.train_steps(mesh, "fsdp", batches[:1])
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(1, state, force=True)
  ckpt.wait()
  want = helpers.flat_params(jax.device_get(state.params))
  model, tx, _ = helpers.tiny_training()
  for mesh_config, devices in [({"data": 2, "fsdp": 4}, None), ({"data": 1}, jax.devices()[:1])]:
    other = sharding.make_mesh(mesh_config, devices)
    abstract, shardings = train_state.state_shardings(model, tx, other, sharding.rules_for("fsdp"))
    _, restored = ckpt.restore(checkpointing.abstract_target(abstract, shardings))
    kernel = restored.params["bert"]["encoder"]["layer_0"]["mlp"]["intermediate"]["kernel"]
    assert kernel.sharding.mesh.devices.size == other.devices.size
    got = helpers.flat_params(jax.device_get(restored.params))
    for name in want:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  ckpt.close()


def test_gradient_accumulation_equals_the_full_batch():
  """2 microbatches of 4 rows: the same update as one batch of 8 (dropout off: masks differ by design).
  Plain SGD, so the update is the averaged gradient itself; Adam's first steps divide by |g| and turn
  rounding in near-zero gradient entries into sign flips, which would test the optimizer, not accumulation."""
  import optax

  from bert_jax.models import BertForPreTraining

  model, _, objective = helpers.tiny_training()
  tx = optax.sgd(0.5)
  model = BertForPreTraining(model.config.replace(dropout_rate=0.0, attention_dropout_rate=0.0))
  batch = helpers.pretraining_batches(1)[0]
  batch["masked_weights"] = np.ones_like(batch["masked_weights"])  # equal counts: mean of means = mean
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = sharding.rules_for("fsdp_tp")
  results = []
  with pytest.raises(
    sharding.ShardingError, match="2 rows per batch shard .* which 4 accumulation microbatches"
  ):
    sharding.check_batch(8, mesh, accumulation_steps=4)
  sharding.check_batch(8, mesh, accumulation_steps=2)
  for k in (1, 2):
    state, shardings = train_state.create_train_state(model, tx, mesh, rules)
    step = train_state.make_train_step(model, tx, objective, mesh, rules, shardings, accumulation_steps=k)
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    assert step.compilations() == 1
    results.append((jax.device_get(state.params), float(metrics["loss"])))
  np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5)
  helpers.assert_params_close(results[1][0], results[0][0])
