"""Sequence packing for fine-tuning (data/packing.py): what goes in comes back out, rows are filled
without overflow, and a packed example gets the same logits, loss and gradients as the example alone."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import objectives
from bert_jax.data import packing
from bert_jax.models import BertConfig, task_model


def _features(n=23, length=16, seed=0, min_len=3):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_len, length + 1, n)
  lengths[0] = length  # one full row
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask, rng.integers(5, 99, (n, length)), 0).astype(np.int32)
  ids[:, 0] = 2
  types = np.where(mask & (np.arange(length)[None] >= lengths[:, None] // 2), 1, 0).astype(np.int32)
  tags = np.where(mask, rng.integers(0, 5, (n, length)), -100).astype(np.int32)
  return {
    "input_ids": ids,
    "attention_mask": mask,
    "token_type_ids": types,
    "labels": rng.integers(0, 3, n).astype(np.int32),
    "tags": tags,
  }


def test_pack_places_every_token_once_and_unpacks_to_the_input():
  f = _features()
  per_row = packing.per_row_limit(f["attention_mask"].sum(1), 16)
  packed = packing.pack(f, per_row=per_row, rows_multiple=4)
  b = packed.batch
  assert packed.rows % 4 == 0 and packed.rows < len(f["input_ids"])
  assert b["attention_mask"].sum() == f["attention_mask"].sum()
  # Within a row, examples follow each other: segment ids 1, 2, ... then padding (0), positions restart.
  for r in range(packed.rows):
    seg = b["segment_ids"][r]
    real = seg[seg > 0]
    assert np.all(np.diff(real) >= 0) and np.all(seg[len(real) :] == 0)
    assert (b["valid"][r] == 1).sum() == (real.max() if real.size else 0)
  for i in range(len(f["input_ids"])):
    r, s, start, n = packed.row[i], packed.slot[i], packed.start[i], packed.length[i]
    np.testing.assert_array_equal(b["input_ids"][r, start : start + n], f["input_ids"][i, :n])
    np.testing.assert_array_equal(b["position_ids"][r, start : start + n], np.arange(n))
    assert b["cls_positions"][r, s] == start and b["labels"][r, s] == f["labels"][i]
  for key in ("input_ids", "token_type_ids", "tags"):
    np.testing.assert_array_equal(
      packing.unpack_tokens(packed, b[key], 16) * f["attention_mask"], f[key] * f["attention_mask"]
    )
  np.testing.assert_array_equal(packing.unpack_examples(packed, b["labels"]), f["labels"])
  assert np.all(packed.batch["tags"][b["attention_mask"] == 0] == 0)  # fill 0 for unknown keys
  tagged = packing.pack(dict(f, labels=f["tags"]), per_row=per_row)
  assert np.all(tagged.batch["labels"][tagged.batch["attention_mask"] == 0] == -100)  # ignored label


def test_first_fit_decreasing_respects_capacity_and_the_per_row_limit():
  lengths = np.random.default_rng(1).integers(1, 40, 200)
  for per_row in (2, 5, 100):
    rows = packing.first_fit_decreasing(lengths, 40, per_row)
    assert sorted(i for r in rows for i in r) == list(range(200))
    assert all(lengths[r].sum() <= 40 and len(r) <= per_row for r in rows)
    if (
      per_row == 100
    ):  # first fit leaves at most one row half empty or worse: fewer than 2 x sum / 40 + 1 rows
      assert sum(lengths[r].sum() <= 20 for r in rows) <= 1


def test_pack_errors_name_the_problem():
  f = _features()
  with pytest.raises(packing.PackingError, match="need .* packed rows; only 1"):
    packing.pack(f, per_row=8, rows=1)
  bad = dict(f, attention_mask=f["attention_mask"][:, ::-1].copy())
  with pytest.raises(packing.PackingError, match="real tokens first"):
    packing.pack(bad, per_row=8)
  with pytest.raises(packing.PackingError, match="does not fit a row of 4"):
    packing.first_fit_decreasing(np.array([3, 5]), 4, 2)


def _config(**changes):
  return BertConfig(
    vocab_size=99,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    mlp_dim=64,
    max_position_embeddings=32,
    **changes,
  )


def _apply(model, params, batch, deterministic=True):
  keys = ("position_ids", "segment_ids", "cls_positions")
  return model.apply(
    {"params": params},
    batch["input_ids"],
    batch["attention_mask"],
    batch["token_type_ids"],
    **{k: batch[k] for k in keys if k in batch},
    deterministic=deterministic,
  )


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_packed_classification_equals_each_example_alone(pooling):
  f = _features()
  model = task_model(_config(pooling=pooling), "classification", 3)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.asarray(f["input_ids"][:2])))["params"]
  alone = _apply(model, params, f)["logits"]
  packed = packing.pack(f, per_row=packing.per_row_limit(f["attention_mask"].sum(1), 16))
  out = _apply(model, params, packed.batch)["logits"]
  assert out.shape == (packed.rows, packed.batch["cls_positions"].shape[1], 3)
  np.testing.assert_allclose(packing.unpack_examples(packed, out), alone, atol=2e-5)
  if pooling != "cls":
    return
  # The loss (mean over real examples) and its gradients: the same training signal.
  objective = objectives.get("classification")

  def loss(p, batch):
    return objective(_apply(model, p, batch), batch)[0]

  grad = jax.jit(jax.value_and_grad(loss))
  want, want_grads = grad(params, {k: f[k] for k in f if k != "tags"})
  got, got_grads = grad(params, {k: v for k, v in packed.batch.items() if k != "tags"})
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)


def test_packed_tagging_equals_each_example_alone():
  f = _features()
  model = task_model(_config(), "tagging", 5)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.asarray(f["input_ids"][:2])))["params"]
  alone = np.asarray(_apply(model, params, f)["logits"])
  features = {k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
  features["labels"] = f["tags"]
  packed = packing.pack(features, per_row=packing.per_row_limit(f["attention_mask"].sum(1), 16))
  batch = {k: v for k, v in packed.batch.items() if k not in packing.EXAMPLE_KEYS_MADE}
  out = packing.unpack_tokens(packed, _apply(model, params, batch)["logits"], 16)
  real = f["attention_mask"].astype(bool)
  np.testing.assert_allclose(out[real], alone[real], atol=2e-5)
  objective = objectives.get("tagging")
  want = objective(_apply(model, params, f), features)[0]
  got = objective(_apply(model, params, batch), batch)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5)


def _span_features(f):
  rng = np.random.default_rng(3)
  lengths = f["attention_mask"].sum(1)
  starts = rng.integers(0, lengths).astype(np.int32)
  ends = np.minimum(starts + rng.integers(0, 3, len(starts)), lengths - 1).astype(np.int32)
  features = {k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
  return dict(features, start_positions=starts, end_positions=ends)


def test_packed_span_loss_and_grads_equal_each_example_alone():
  """Span QA: answer positions move with their example, and the loss (each example's softmax over its own
  tokens) and its gradients match the examples encoded alone with padding left out of the softmax."""
  from bert_jax import finetune

  features = _span_features(_features())
  model = task_model(_config(), "span")
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.asarray(features["input_ids"][:2])))["params"]
  per_row = packing.per_row_limit(features["attention_mask"].sum(1), 16)
  packed = finetune.pack_rows(features, "span", per_row)
  b = packed.batch
  assert "cls_positions" not in b
  for key in ("start_positions", "end_positions"):
    at = b["input_ids"][packed.row, b[key][packed.row, packed.slot]]
    np.testing.assert_array_equal(at, features["input_ids"][np.arange(len(at)), features[key]])

  def alone(p):
    out = _apply(model, p, features)

    def ce(logits, positions):
      logits = jnp.where(features["attention_mask"] > 0, logits, -jnp.inf)
      return -jnp.take_along_axis(jax.nn.log_softmax(logits), positions[:, None], 1).mean()

    return (
      ce(out["start_logits"], features["start_positions"]) + ce(out["end_logits"], features["end_positions"])
    ) / 2

  def packed_loss(p):
    return objectives.get("span")(_apply(model, p, b), b)[0]

  want, want_grads = jax.jit(jax.value_and_grad(alone))(params)
  got, got_grads = jax.jit(jax.value_and_grad(packed_loss))(params)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["classification", "tagging", "span"])
def test_unpacked_evaluation_runs_length_buckets_and_answers_as_full_rows(kind):
  """Unpacked, finetune.predict_outputs runs rows longest first, each batch cut to its own length bucket:
  every example's outputs equal those of the whole set run at full width in one batch, in input order."""
  from bert_jax import finetune, sharding
  from configs import common

  rng = np.random.default_rng(1)
  width, n = 80, 23
  lengths = rng.integers(3, 33, n)
  lengths[rng.choice(n, 5, replace=False)] = rng.integers(65, width + 1, 5)  # 5 long rows among short
  f = _features(n, width)
  f["attention_mask"] = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
  f["input_ids"] = f["input_ids"] * f["attention_mask"]
  f["token_type_ids"] = f["token_type_ids"] * f["attention_mask"]
  config = BertConfig(
    vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_position_embeddings=width
  )
  model = task_model(config, kind, 3)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.asarray(f["input_ids"][:2])))["params"]
  mesh, _ = sharding.from_config(common.mesh_config("dp"))
  keys = ("start_logits", "end_logits") if kind == "span" else ("logits",)
  jitted = jax.jit(lambda p, batch: {k: _apply(model, p, batch)[k] for k in keys})
  widths = []

  def step(p, batch):
    widths.append(batch["input_ids"].shape[1])
    return jitted(p, batch)

  features = {k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
  batch_size = 2 * sharding.data_parallel_size(mesh)  # 16 rows: the long rows' batch, then a short one
  got = finetune.predict_outputs(step, params, features, batch_size, mesh, kind)
  assert sorted(set(widths)) == [32, width]
  want = jitted(params, {k: jnp.asarray(v) for k, v in features.items()})
  real = f["attention_mask"].astype(bool)
  for k in keys:
    assert got[k].shape == want[k].shape
    if kind == "classification":
      np.testing.assert_allclose(got[k], want[k], atol=2e-5)
    else:
      np.testing.assert_allclose(got[k][real], np.asarray(want[k])[real], atol=2e-5)


@pytest.mark.parametrize("kind", ["classification", "tagging", "span"])
def test_evaluation_outputs_of_packed_rows_read_back_per_example(kind):
  """finetune.predict_outputs with packing returns each example's outputs in input order, as unpacked
  (the unpacked ones are checked against full-width rows in the test below)."""
  from bert_jax import finetune, sharding
  from configs import common

  f = _features()
  model = task_model(_config(), kind, 3)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.asarray(f["input_ids"][:2])))["params"]
  mesh, _ = sharding.from_config(common.mesh_config("dp"))
  key = "start_logits" if kind == "span" else "logits"
  step = jax.jit(lambda p, batch: {key: _apply(model, p, batch)[key]})
  features = {k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
  batch_size = 2 * sharding.data_parallel_size(mesh)
  plain = finetune.predict_outputs(step, params, features, batch_size, mesh, kind)[key]
  packed = finetune.predict_outputs(step, params, features, batch_size, mesh, kind, packed=True)[key]
  assert packed.shape == plain.shape
  if kind in ("tagging", "span"):
    real = f["attention_mask"].astype(bool)
    np.testing.assert_allclose(packed[real], plain[real], atol=2e-5)
    if kind == "span":  # after an example: never an answer candidate
      assert np.all(packed[~real] == np.finfo(np.float32).min)
  else:
    np.testing.assert_allclose(packed, plain, atol=2e-5)
