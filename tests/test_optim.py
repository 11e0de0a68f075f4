"""optimizer.name=bert_adamw with optimizer.schedule=bert against BERT's optimizer written out in NumPy.

The reference below is written from google-research/bert's optimization.py formulas, not from bert_jax's code:
the learning rate is init_lr * step / warmup while step < warmup, else init_lr * (1 - min(step, T) / T) (step
counted from 0, so the first update has rate 0); gradients are clipped to global norm 1 over all variables;
then m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, update = m / (sqrt(v) + eps), plus weight_decay * param
unless the variable's name contains "LayerNorm", "layer_norm" or "bias"; param -= lr * update. It runs on
HuggingFace parameter names (bert_jax's tree mapped by convert.params_to_hf), where those exclusions apply as the
reference spells them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from bert_jax import convert, optim
from bert_jax.models import BertConfig, BertForPreTraining
from configs import common

EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")


def reference_rate(step: int, init_lr: float, warmup: int, total: int) -> float:
  rate = init_lr * (1.0 - min(step, total) / total)
  if warmup and step < warmup:
    rate = init_lr * step / warmup
  return rate


def reference_bert_adamw(params, grads_per_step, *, init_lr, warmup, total, b1, b2, eps, weight_decay, clip):
  params = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(p) for k, p in params.items()}
  history = []
  for step, grads in enumerate(grads_per_step):
    grads = {k: g.astype(np.float64) for k, g in grads.items()}
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    scale = clip / max(norm, clip)
    lr = reference_rate(step, init_lr, warmup, total)
    for name in params:
      g = grads[name] * scale
      m[name] = b1 * m[name] + (1.0 - b1) * g
      v[name] = b2 * v[name] + (1.0 - b2) * g * g
      update = m[name] / (np.sqrt(v[name]) + eps)
      if not any(word in name for word in EXCLUDE_FROM_WEIGHT_DECAY):
        update = update + weight_decay * params[name]
      params[name] = params[name] - lr * update
    history.append(dict(params))
  return history


def test_bert_schedule_matches_the_reference_rates():
  rate = optim.schedule(1e-3, 10, 100, "bert")
  for step in (0, 1, 5, 9, 10, 11, 50, 99, 100, 120):
    assert float(rate(step)) == pytest.approx(reference_rate(step, 1e-3, 10, 100), rel=1e-6, abs=1e-12)
  # Right after warmup the rate is already (1 - w/T) of the peak, unlike the linear schedule's.
  assert float(rate(10)) == pytest.approx(0.9e-3)
  assert float(optim.schedule(1e-3, 10, 100, "linear")(10)) == pytest.approx(1e-3)


def test_bert_adamw_first_20_updates_equal_the_numpy_reference():
  config = BertConfig(
    vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, max_position_embeddings=16
  )
  model = BertForPreTraining(config)
  ids = jnp.zeros((1, 8), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), ids, ids, jnp.ones((1, 8), jnp.int32), ids)["params"])
  # Unit-scale weights and a large decay, so weight decay moves every decayed variable well above float32 noise.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  start = params
  # Gradient scales that put the global norm above and below the clipping threshold in turn.
  scales = [0.02, 5.0, 0.3, 40.0, 0.01] * 4
  grads_per_step = []
  for step, s in enumerate(scales):
    keys = jax.random.split(jax.random.key(100 + step), len(leaves))
    grads_per_step.append(
      jax.tree.unflatten(treedef, [s * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    )

  opt_config = common.optimizer_config(
    "bert_adamw", learning_rate=0.01, warmup_steps=5, weight_decay=0.3, grad_clip=1.0
  )
  assert opt_config.schedule == "bert"
  tx = optim.make_optimizer(opt_config, total_steps=25)
  state = tx.init(params)
  got = []
  update = jax.jit(tx.update)
  for grads in grads_per_step:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    got.append(convert.params_to_hf(jax.device_get(params), config))

  hf = lambda tree: convert.params_to_hf(jax.device_get(tree), config)
  want = reference_bert_adamw(
    hf(start),
    [hf(g) for g in grads_per_step],
    init_lr=0.01,
    warmup=5,
    total=25,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    weight_decay=0.3,
    clip=1.0,
  )
  decayed = [n for n in want[0] if not any(w in n for w in EXCLUDE_FROM_WEIGHT_DECAY)]
  assert "bert.embeddings.word_embeddings.weight" in decayed and len(decayed) < len(want[0])
  for step, (ours, ref) in enumerate(zip(got, want)):
    assert ours.keys() == ref.keys()
    for name in ref:
      np.testing.assert_allclose(ours[name], ref[name], rtol=0, atol=1e-6, err_msg=f"step {step}: {name}")
  # The first update has learning rate 0: nothing moved.
  for name, value in hf(start).items():
    np.testing.assert_array_equal(got[0][name], value)


def test_bert_adamw_is_not_optax_adamw_early():
  """Without bias correction the step-10 update is about (1 - b1^10) / sqrt(1 - b2^10) = 6.5x optax's."""
  params = {"kernel": jnp.ones((4,))}
  grads = {"kernel": jnp.full((4,), 0.5)}
  sizes = {}
  for name in ("bert_adamw", "adamw"):
    cfg = common.optimizer_config(name, learning_rate=1e-3, warmup_steps=0, weight_decay=0.0, grad_clip=0.0)
    cfg.schedule = "linear"
    tx = optim.make_optimizer(cfg, total_steps=1000)
    state = tx.init(params)
    for _ in range(10):
      updates, state = tx.update(grads, state, params)
    sizes[name] = float(jnp.abs(updates["kernel"][0]))
  assert sizes["bert_adamw"] / sizes["adamw"] == pytest.approx(
    (1 - 0.9**10) / np.sqrt(1 - 0.999**10), rel=1e-3
  )


@pytest.mark.parametrize(
  "field, value, words",
  [
    ("schedule", "cosine", ["optimizer.schedule", "'bert'", "'linear'"]),
    ("name", "sgd", ["optimizer.name", "bert_adamw"]),
  ],
)
def test_unknown_optimizer_or_schedule_names_the_field_and_the_choices(field, value, words):
  cfg = common.optimizer_config("bert_adamw", warmup_steps=0)
  cfg[field] = value
  with pytest.raises(ValueError) as err:
    optim.make_optimizer(cfg, total_steps=10)
  for word in words:
    assert word in str(err.value)


def test_the_runner_refuses_an_unknown_schedule_before_writing(tmp_path):
  """Checked at start-up (bert_jax.main), nested stage configs included, before a workdir exists."""
  import os
  import subprocess
  import sys

  from configs import demo

  optim.check_config(demo.get_config())  # the demo's two stages: adamw/linear, known
  workdir = tmp_path / "run"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "bert_jax.main",
      "--config=configs/demo.py",
      f"--workdir={workdir}",
      "--config.finetune.optimizer.schedule=cosine",
    ],
    capture_output=True,
    text=True,
    cwd=root,
    timeout=300,
  )
  assert result.returncode != 0
  assert "config.finetune.optimizer.schedule='cosine'; choices: ['bert', 'linear']" in result.stderr
  assert not workdir.exists()
