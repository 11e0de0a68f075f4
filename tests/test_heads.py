"""Fine-tuning heads against transformers' BertFor<Task> models, their losses against their
definitions, and layer-wise learning-rate decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from bert_jax import objectives, optim
from bert_jax.predict import Predictor
from configs import common
from tests import helpers


@pytest.mark.parametrize(
  "architecture, overrides",
  [
    ("BertForSequenceClassification", dict(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})),
    ("BertForSequenceClassification", dict(num_labels=1, problem_type="regression")),
    ("BertForTokenClassification", dict(num_labels=5)),
    ("BertForQuestionAnswering", {}),
  ],
)
def test_task_heads_match_transformers(tmp_path, architecture, overrides):
  ref = helpers.tiny_hf_folder(str(tmp_path), architecture, **overrides)
  predictor = Predictor.from_pretrained(tmp_path)
  batch = helpers.random_batch(99, batch=4, length=16)
  out = predictor._forward(
    predictor.params, *(jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
  )
  with torch.no_grad():
    want = ref(**helpers.torch_inputs(batch))
  if architecture == "BertForQuestionAnswering":
    for key in ("start_logits", "end_logits"):
      diff = helpers.max_abs_diff_real(out[key], want[key].numpy(), batch["attention_mask"])
      assert diff < 1e-5, (key, diff)
    return
  if architecture == "BertForTokenClassification":
    assert helpers.max_abs_diff_real(out["logits"], want.logits.numpy(), batch["attention_mask"]) < 1e-5
    return
  np.testing.assert_allclose(np.asarray(out["logits"]), want.logits.numpy(), atol=1e-5)
  if overrides.get("num_labels") == 3:
    assert predictor.kind == "classification" and predictor.labels == ["neg", "neu", "pos"]
  else:
    assert predictor.kind == "regression"


def test_multiple_choice_matches_transformers(tmp_path):
  ref = helpers.tiny_hf_folder(str(tmp_path), "BertForMultipleChoice")
  predictor = Predictor.from_pretrained(tmp_path)
  flat = helpers.random_batch(99, batch=6, length=16)
  batch = {k: v.reshape(2, 3, 16) for k, v in flat.items()}
  out = predictor._forward(
    predictor.params, *(jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
  )
  with torch.no_grad():
    want = ref(**helpers.torch_inputs(batch)).logits.numpy()
  assert out["logits"].shape == (2, 3)
  np.testing.assert_allclose(np.asarray(out["logits"]), want, atol=1e-5)


def test_classification_loss_is_cross_entropy_over_valid_rows():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 3)).astype(np.float32)
  labels = np.array([0, 2, 1, 1, 0])
  valid = np.array([1, 1, 1, 0, 0])
  loss, metrics = objectives.get("classification")(
    {"logits": jnp.asarray(logits)}, {"labels": labels, "valid": valid}
  )
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.mean([log_probs[i, labels[i]] for i in range(3)])
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["accuracy"]), np.mean(logits[:3].argmax(-1) == labels[:3]))


def test_tagging_loss_ignores_unlabelled_positions():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 3)).astype(np.float32)
  labels = np.array([[-100, 2, -100, 0], [-100, 1, 1, -100]])
  loss, _ = objectives.get("tagging")({"logits": jnp.asarray(logits)}, {"labels": labels})
  keep = labels != -100
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.mean(np.take_along_axis(log_probs, np.maximum(labels, 0)[..., None], -1)[..., 0][keep])
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)


def test_span_loss_is_mean_of_start_and_end():
  rng = np.random.default_rng(2)
  start, end = (jnp.asarray(rng.normal(size=(3, 7)).astype(np.float32)) for _ in range(2))
  batch = {"start_positions": np.array([0, 3, 6]), "end_positions": np.array([0, 4, 6])}
  loss, _ = objectives.get("span")({"start_logits": start, "end_logits": end}, batch)
  ce_start = optax.softmax_cross_entropy_with_integer_labels(start, batch["start_positions"]).mean()
  ce_end = optax.softmax_cross_entropy_with_integer_labels(end, batch["end_positions"]).mean()
  np.testing.assert_allclose(float(loss), float(ce_start + ce_end) / 2, rtol=1e-6)


def _tree(scanned: bool):
  layer = {"attention": {"query": {"kernel": jnp.ones((4, 2, 2))}}}
  encoder = (
    {"layers": {"block": {"attention": {"query": {"kernel": jnp.ones((3, 4, 2, 2))}}}}}
    if scanned
    else {f"layer_{i}": layer for i in range(3)}
  )
  return {
    "bert": {
      "embeddings": {"word_embeddings": {"embedding": jnp.ones((10, 4))}},
      "encoder": encoder,
      "pooler": {"kernel": jnp.ones((4, 4))},
    },
    "classifier": {"kernel": jnp.ones((4, 2))},
  }


@pytest.mark.parametrize("scanned", [False, True])
def test_layer_decay_scales_each_layer(scanned):
  """decay 0.5 over 3 layers: head 1, layer 2 -> 0.5, layer 1 -> 0.25, layer 0 -> 0.125, embeddings 0.0625."""
  tx = optim.scale_by_layer_decay(0.5, 3)
  grads = _tree(scanned)
  updates, _ = tx.update(grads, tx.init(grads))
  assert float(updates["classifier"]["kernel"][0, 0]) == 1.0
  assert float(updates["bert"]["pooler"]["kernel"][0, 0]) == 1.0
  assert float(updates["bert"]["embeddings"]["word_embeddings"]["embedding"][0, 0]) == 0.0625
  if scanned:
    got = updates["bert"]["encoder"]["layers"]["block"]["attention"]["query"]["kernel"][:, 0, 0, 0]
  else:
    got = [
      updates["bert"]["encoder"][f"layer_{i}"]["attention"]["query"]["kernel"][0, 0, 0] for i in range(3)
    ]
  np.testing.assert_allclose(np.asarray(got), [0.125, 0.25, 0.5])


def test_layer_decay_through_make_optimizer():
  params = _tree(False)
  grads = jax.tree.map(jnp.ones_like, params)
  plain = optim.make_optimizer(
    common.optimizer_config("adamw", warmup_steps=0, grad_clip=0.0, weight_decay=0.0), total_steps=10
  )
  decayed = optim.make_optimizer(
    common.optimizer_config("adamw", warmup_steps=0, grad_clip=0.0, weight_decay=0.0, layer_decay=0.5),
    total_steps=10,
    num_layers=3,
  )
  u_plain, _ = plain.update(grads, plain.init(params), params)
  u_decay, _ = decayed.update(grads, decayed.init(params), params)
  ratio = (
    u_decay["bert"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]
    / u_plain["bert"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]
  )
  np.testing.assert_allclose(np.asarray(ratio), 0.125, rtol=1e-6)
  with pytest.raises(ValueError, match="layer_decay needs the model's num_layers"):
    optim.make_optimizer(common.optimizer_config("adamw", warmup_steps=0, layer_decay=0.5), total_steps=10)
