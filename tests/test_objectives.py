"""Pretraining objectives against hand-computed numpy losses, and the ELECTRA model they train."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import objectives
from bert_jax.models.bert import scan_params
from bert_jax.models.config import BertConfig
from bert_jax.models.electra import ElectraForPretraining, generator_config
from tests.helpers import flat_params, pretraining_batches, tiny_training


@pytest.fixture(autouse=True)
def quick_compiles():
  """XLA's CPU backend spends seconds optimising each of the small programs these tests compile (the
  ELECTRA train step alone about 20 s), far longer than they run; unoptimised builds take a third of
  that. The setting is global, so it is restored after each test."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def np_softmax_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return -np.take_along_axis(log_probs, np.asarray(labels)[..., None], -1)[..., 0]


def np_sigmoid_bce(logits, labels):
  logits = np.asarray(logits, np.float64)
  return np.logaddexp(0.0, logits) - labels * logits  # -[y log σ(x) + (1 - y) log(1 - σ(x))]


def mlm_batch(seed=0, batch=3, predictions=4, vocab=7):
  rng = np.random.default_rng(seed)
  weights = np.ones((batch, predictions), np.float32)
  weights[0, -1] = weights[2, -2:] = 0.0  # unused prediction slots
  outputs = {
    "mlm_logits": rng.normal(size=(batch, predictions, vocab)).astype(np.float32),
    "nsp_logits": rng.normal(size=(batch, 2)).astype(np.float32),
  }
  batch = {
    "masked_ids": rng.integers(0, vocab, (batch, predictions)).astype(np.int32),
    "masked_weights": weights,
    "nsp_labels": np.array([0, 1, 1], np.int32),
  }
  return outputs, batch


def expected_mlm(outputs, batch):
  losses = np_softmax_ce(outputs["mlm_logits"], batch["masked_ids"])
  w = batch["masked_weights"]
  correct = outputs["mlm_logits"].argmax(-1) == batch["masked_ids"]
  return (losses * w).sum() / w.sum(), (correct * w).sum() / w.sum()


# --- registry ----------------------------------------------------------------------------------


def test_registry_describes_each_objective():
  assert set(objectives.names()) >= {"mlm", "mlm_nsp", "mlm_sop", "electra"}
  expected = {"mlm": None, "mlm_nsp": "nsp", "mlm_sop": "sop", "electra": None}
  assert {name: objectives.pair_task(name) for name in expected} == expected
  assert [objectives.uses_nsp(n) for n in expected] == [False, True, True, False]
  assert objectives.model_family("electra") == "electra"
  assert objectives.model_family("mlm_sop") == "bert"


@pytest.mark.parametrize("lookup", [objectives.get, objectives.pair_task, objectives.model_family])
def test_unknown_objective_lists_registered_names(lookup):
  with pytest.raises(ValueError, match=r"unknown objective 'mlm_nps'.*'electra'.*'mlm_sop'"):
    lookup("mlm_nps")


# --- MLM and the sentence-pair tasks -------------------------------------------------------------


def test_mlm_matches_numpy_and_ignores_unused_slots():
  outputs, batch = mlm_batch()
  loss, metrics = objectives.get("mlm")(outputs, batch)
  want_loss, want_accuracy = expected_mlm(outputs, batch)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["mlm_accuracy"], want_accuracy, rtol=1e-6)
  assert set(metrics) == {"loss", "mlm_loss", "mlm_accuracy"}
  # Whatever the logits say at weight-0 slots, they are not scored.
  garbage = outputs["mlm_logits"].copy()
  garbage[batch["masked_weights"] == 0] = 1e4
  np.testing.assert_allclose(
    objectives.get("mlm")(dict(outputs, mlm_logits=garbage), batch)[0], loss, rtol=1e-6
  )


@pytest.mark.parametrize("name, task", [("mlm_nsp", "nsp"), ("mlm_sop", "sop")])
def test_sentence_pair_objectives(name, task):
  outputs, batch = mlm_batch(seed=1)
  loss, metrics = objectives.get(name)(outputs, batch)
  pair_loss = np_softmax_ce(outputs["nsp_logits"], batch["nsp_labels"]).mean()
  pair_accuracy = (outputs["nsp_logits"].argmax(-1) == batch["nsp_labels"]).mean()
  mlm_loss, _ = expected_mlm(outputs, batch)
  assert set(metrics) == {"loss", "mlm_loss", "mlm_accuracy", f"{task}_loss", f"{task}_accuracy"}
  np.testing.assert_allclose(metrics[f"{task}_loss"], pair_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics[f"{task}_accuracy"], pair_accuracy, rtol=1e-6)
  np.testing.assert_allclose(loss, mlm_loss + pair_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], loss)


# --- the ELECTRA objective on hand-made outputs ---------------------------------------------------


def electra_case():
  """Two rows of 6 tokens (the second padded after 4), 3 prediction slots each."""
  input_ids = np.array([[2, 4, 9, 4, 3, 0], [2, 4, 11, 3, 0, 0]], np.int32)  # 4 = [MASK]
  attention_mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], np.int32)
  batch = {
    "input_ids": input_ids,
    "attention_mask": attention_mask,
    "token_type_ids": np.zeros_like(input_ids),
    # row 0: positions 1 and 3 masked, slot 2 unused (points at [CLS]);
    # row 1: position 1 masked twice, slot 2 unused but points at the real token 11.
    "masked_positions": np.array([[1, 3, 0], [1, 1, 2]], np.int32),
    "masked_ids": np.array([[7, 8, 0], [6, 6, 0]], np.int32),
    "masked_weights": np.array([[1, 1, 0], [1, 1, 0]], np.float32),
  }
  # Row 0: the sample at position 1 equals the original (7), position 3 is replaced (5 != 8).
  # Row 1: position 1 replaced (9 != 6); the unused slot overwrote position 2 (11 -> 10).
  corrupted = np.array([[2, 7, 9, 5, 3, 0], [2, 9, 10, 3, 0, 0]], np.int32)
  labels = np.array([[0, 0, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0]], np.float32)
  return batch, corrupted, labels


def test_replaced_token_labels():
  batch, corrupted, labels = electra_case()
  np.testing.assert_array_equal(objectives.replaced_token_labels(corrupted, batch), labels)


def test_electra_loss_matches_numpy():
  batch, corrupted, labels = electra_case()
  rng = np.random.default_rng(2)
  outputs = {
    "mlm_logits": rng.normal(size=(2, 3, 12)).astype(np.float32),
    "rtd_logits": rng.normal(size=(2, 6)).astype(np.float32) * 3,
    "corrupted_ids": corrupted,
  }
  real = batch["attention_mask"].astype(bool)
  want_rtd = np_sigmoid_bce(outputs["rtd_logits"], labels)[real].mean()
  want_mlm, _ = expected_mlm(outputs, batch)
  for weight, (loss, metrics) in (
    (objectives.ELECTRA_RTD_WEIGHT, objectives.get("electra")(outputs, batch)),
    (1.0, objectives.electra_loss(outputs, batch, rtd_weight=1.0)),
  ):
    assert set(metrics) == {
      "loss",
      "mlm_loss",
      "mlm_accuracy",
      "rtd_loss",
      "rtd_accuracy",
      "rtd_replaced_fraction",
    }
    np.testing.assert_allclose(metrics["rtd_loss"], want_rtd, rtol=1e-6)
    np.testing.assert_allclose(metrics["mlm_loss"], want_mlm, rtol=1e-6)
    np.testing.assert_allclose(loss, want_mlm + weight * want_rtd, rtol=1e-6)
    np.testing.assert_allclose(metrics["rtd_accuracy"], ((outputs["rtd_logits"] > 0) == labels)[real].mean())
    np.testing.assert_allclose(metrics["rtd_replaced_fraction"], 3 / 9)
  assert objectives.ELECTRA_RTD_WEIGHT == 50.0
  # Padding tokens are not scored, whatever the discriminator says there.
  noisy = outputs["rtd_logits"].copy()
  noisy[~real] = -1e3
  np.testing.assert_allclose(
    objectives.get("electra")(dict(outputs, rtd_logits=noisy), batch)[1]["rtd_loss"], want_rtd, rtol=1e-6
  )


# --- the ELECTRA model ---------------------------------------------------------------------------

DISC = BertConfig(
  vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_position_embeddings=16
)


def electra(**changes):
  disc = DISC.replace(**changes)
  return ElectraForPretraining(generator_config(disc, hidden_fraction=0.5), disc)


def model_batch():
  batch = pretraining_batches(1, batch=2, length=8, predictions=3, vocab=DISC.vocab_size, seed=3)[0]
  # Distinct positions, inside both rows' real tokens (the second row has at least 4).
  batch["masked_positions"] = np.array([[1, 3, 5], [2, 1, 3]], np.int32)
  return {k: jnp.asarray(v) for k, v in batch.items()}


# Compiled once per model and mode and shared between tests: op by op, or recompiled per call, these
# tiny models cost seconds each time instead of milliseconds.
_COMPILED = {}


def _compiled(kind, model, fn):
  key = (kind, model.generator_config, model.discriminator_config)
  return _COMPILED.setdefault(key, jax.jit(fn))


def init(model):
  """Fresh, unboxed params (a new tree each call: tests edit them)."""
  run = _compiled("init", model, lambda rngs, ids: nn.meta.unbox(model.init(rngs, ids)["params"]))
  return run({"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.zeros((1, 8), jnp.int32))


def forward(model, params, batch, rng):
  return model.apply(
    {"params": params},
    batch["input_ids"],
    batch["attention_mask"],
    batch["token_type_ids"],
    masked_positions=batch["masked_positions"],
    deterministic=rng is None,
    rngs=None if rng is None else {"dropout": rng},
  )


def apply(model, params, batch, rng=None):
  """Training mode (sampling with the "dropout" rng) when given `rng`, deterministic otherwise."""
  if rng is None:
    return _compiled("eval", model, lambda p, b: forward(model, p, b, None))(params, batch)
  return _compiled("train", model, lambda p, b, r: forward(model, p, b, r))(params, batch, rng)


def test_generator_config_scales_the_discriminator():
  g = generator_config(BertConfig(), hidden_fraction=0.25)
  assert (g.hidden_size, g.num_heads, g.mlp_dim, g.num_layers) == (192, 3, 768, 12)
  assert g.head_dim == BertConfig().head_dim
  with pytest.raises(ValueError, match="hidden_fraction"):
    generator_config(BertConfig(), hidden_fraction=1.5)


def test_configs_must_agree_on_the_shared_embeddings():
  model = ElectraForPretraining(generator_config(DISC).replace(vocab_size=65), DISC)
  with pytest.raises(ValueError, match=r"share their embeddings.*vocab_size: 65 vs 64"):
    jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 8), jnp.int32)))


def test_electra_shapes_names_and_one_embedding_table():
  model, batch = electra(), model_batch()
  boxed = jax.eval_shape(
    lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch["input_ids"])
  )["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
  names = flat_params(init(model))
  tables = [n for n in names if "word_embeddings" in n]
  assert tables == ["discriminator/embeddings/word_embeddings/embedding"]
  assert not any(n.startswith("generator/embeddings/") for n in names)
  assert names["generator/embeddings_project/kernel"].shape == (32, 16)
  assert names["generator/mlm/transform/kernel"].shape == (16, 32)  # back up to the embedding size
  assert names["rtd/classifier/kernel"].shape == (32, 1)

  out = apply(model, init(model), batch, jax.random.key(5))
  b, p = batch["masked_positions"].shape
  assert out["mlm_logits"].shape == (b, p, DISC.vocab_size)
  assert out["sampled_ids"].shape == (b, p) and out["sampled_ids"].dtype == jnp.int32
  assert out["corrupted_ids"].shape == out["rtd_logits"].shape == batch["input_ids"].shape
  # The corrupted input is the input with the samples written at the masked positions.
  positions = np.asarray(batch["masked_positions"])
  want = np.array(batch["input_ids"])
  want[np.arange(b)[:, None], positions] = np.asarray(out["sampled_ids"])
  np.testing.assert_array_equal(out["corrupted_ids"], want)


def test_shared_embeddings_feed_both_models():
  model, batch = electra(), model_batch()
  params = init(model)
  base = apply(model, params, batch)
  table = params["discriminator"]["embeddings"]["position_embeddings"]["embedding"]
  params["discriminator"]["embeddings"]["position_embeddings"]["embedding"] = table + jax.random.normal(
    jax.random.key(9), table.shape
  )
  moved = apply(model, params, batch)
  assert np.abs(moved["mlm_logits"] - base["mlm_logits"]).max() > 1e-3
  assert np.abs(moved["rtd_logits"] - base["rtd_logits"]).max() > 1e-3


def test_sampling_follows_the_generator_distribution():
  # In deterministic mode (no dropout) every row has the same logits, and the fixed sampling key
  # still draws each slot independently: the slots are many draws from one distribution.
  model = electra()
  rows, slots = 512, 8
  batch = {k: jnp.repeat(v[:1], rows, axis=0) for k, v in model_batch().items()}
  batch["masked_positions"] = jnp.full((rows, slots), 2, jnp.int32)
  params = init(model)
  bias = params["generator"]["mlm"]["output_bias"]
  params["generator"]["mlm"]["output_bias"] = bias + 3.0 * jax.random.normal(jax.random.key(7), bias.shape)

  out = apply(model, params, batch)
  logits = np.asarray(out["mlm_logits"])
  np.testing.assert_allclose(logits, np.broadcast_to(logits[0, 0], logits.shape), atol=1e-5)
  probs = np.asarray(jax.nn.softmax(logits[0, 0]))
  counts = np.bincount(np.asarray(out["sampled_ids"]).ravel(), minlength=DISC.vocab_size)
  total_variation = 0.5 * np.abs(counts / counts.sum() - probs).sum()
  assert total_variation < 0.05, total_variation


def test_sampling_is_reproducible():
  model, batch = electra(), model_batch()
  params = init(model)
  # Training mode: the "dropout" rng decides the samples.
  first = apply(model, params, batch, jax.random.key(11))["sampled_ids"]
  np.testing.assert_array_equal(apply(model, params, batch, jax.random.key(11))["sampled_ids"], first)
  assert (apply(model, params, batch, jax.random.key(12))["sampled_ids"] != first).any()
  # Deterministic mode needs no rng and always draws the same.
  np.testing.assert_array_equal(
    apply(model, params, batch)["sampled_ids"], apply(model, params, batch)["sampled_ids"]
  )


def test_peaked_generator_samples_its_argmax_and_nothing_counts_as_replaced():
  model, batch = electra(), model_batch()
  params = init(model)
  favourite = 17
  params["generator"]["mlm"]["output_bias"] = (
    params["generator"]["mlm"]["output_bias"].at[favourite].set(50.0)
  )
  batch = dict(
    batch,
    masked_ids=jnp.full_like(batch["masked_ids"], favourite),
    masked_weights=jnp.ones_like(batch["masked_weights"]),
  )
  out = apply(model, params, batch, jax.random.key(3))
  np.testing.assert_array_equal(out["sampled_ids"], favourite)
  _, metrics = objectives.get("electra")(out, batch)
  # Every sample equals the original it replaced: the discriminator sees the original text.
  assert float(metrics["rtd_replaced_fraction"]) == 0.0


def test_first_position_is_never_replaced():
  model, batch = electra(), model_batch()
  batch = dict(batch, masked_positions=batch["masked_positions"].at[:, -1].set(0))
  out = apply(model, init(model), batch, jax.random.key(3))
  np.testing.assert_array_equal(out["corrupted_ids"][:, 0], batch["input_ids"][:, 0])


def test_discriminator_loss_does_not_reach_the_generator():
  model, batch = electra(), model_batch()

  @jax.jit
  def rtd_grads(params):
    def rtd_loss(p):
      return objectives.get("electra")(forward(model, p, batch, jax.random.key(4)), batch)[1]["rtd_loss"]

    return jax.grad(rtd_loss)(params)

  grads = {name: np.abs(g).max() for name, g in flat_params(rtd_grads(init(model))).items()}
  generator = [name for name in grads if name.startswith("generator/")]
  assert generator and all(grads[name] == 0.0 for name in generator), [n for n in generator if grads[n]]
  # ... while it trains the discriminator and the embeddings both models read.
  assert grads["discriminator/encoder/layer_1/mlp/output/kernel"] > 0
  assert grads["discriminator/embeddings/word_embeddings/embedding"] > 0


def test_scanned_layers_match_unscanned():
  model, scanned_model, batch = electra(), electra(scan_layers=True), model_batch()
  params = init(model)
  scanned = dict(
    params,
    generator=scan_params(params["generator"], model.generator_config.num_layers),
    discriminator=scan_params(params["discriminator"], DISC.num_layers),
  )
  abstract = jax.eval_shape(
    lambda: nn.meta.unbox(scanned_model.init({"params": jax.random.key(0)}, batch["input_ids"])["params"])
  )
  assert "layers" in abstract["generator"]["encoder"] and "layers" in abstract["discriminator"]["encoder"]
  assert jax.tree.map(jnp.shape, scanned) == jax.tree.map(lambda a: a.shape, abstract)
  want, got = apply(model, params, batch), apply(scanned_model, scanned, batch)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)


def test_train_steps_reduce_the_electra_loss():
  from bert_jax import sharding, train_state

  bert, tx, objective = tiny_training("electra")
  # Scanned layers: this also checks that ELECTRA initialises and trains (dropout, gradients) under nn.scan.
  disc = bert.config.replace(scan_layers=True)
  model = ElectraForPretraining(generator_config(disc, hidden_fraction=0.25), disc)
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.rules_for("dp")
  state, shardings = train_state.create_train_state(model, tx, mesh, rules, seed=0)
  step = train_state.make_train_step(model, tx, objective, mesh, rules, shardings)
  batch = sharding.global_batch(pretraining_batches(1, vocab=disc.vocab_size, seed=5)[0], mesh)
  history = []
  for _ in range(8):
    state, metrics = step(state, batch)
    history.append({k: float(v) for k, v in metrics.items()})
  first, last = history[0], history[-1]
  assert all(np.isfinite(m["loss"]) for m in history)
  assert last["loss"] < first["loss"] - 1.0, [m["loss"] for m in history]
  assert last["mlm_loss"] < first["mlm_loss"] and last["rtd_loss"] < first["rtd_loss"]
  assert 0.0 < first["rtd_replaced_fraction"] < 1.0
  assert step.compilations() == 1


def test_pair_metrics_skip_rows_marked_invalid():
  """Evaluation fills its last batch with copies marked valid = 0; NSP/SOP metrics ignore them."""
  logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
  batch = {"nsp_labels": jnp.array([0, 0, 1]), "valid": jnp.array([1, 1, 0])}
  loss, metrics = objectives._pair({"nsp_logits": logits}, batch, "nsp")
  want = -np.log(np.exp(logits[:2]) / np.exp(logits[:2]).sum(-1, keepdims=True))[[0, 1], [0, 0]].mean()
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(metrics["nsp_accuracy"]) == 0.5
