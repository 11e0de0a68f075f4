"""The HuggingFace Flax peer (.venv-peers: transformers 4.57.6 with the jax/flax of requirements.txt).

forward: `FlaxBertModel` (encoder + pooler), train=False, called inside one `jax.jit`.
train:   `FlaxBertForMaskedLM` (vocabulary logits at every position, as HuggingFace computes them), the
         masked-token cross-entropy of its run_mlm_flax example, optax AdamW with BERT's settings and a
         decay mask off biases and LayerNorm; the step jitted once with params and optimizer state donated.

Run by bench.py: `.venv-peers/bin/python peer_hf_flax.py hf_flax`; requests on stdin (see worker_io.py).
"""

from __future__ import annotations

import sys

import worker_io

CHANNEL = worker_io.protocol_channel()  # before any library can print to stdout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import transformers  # noqa: E402
from transformers import FlaxBertForMaskedLM, FlaxBertModel  # noqa: E402

import jax_common  # noqa: E402
from hf_common import hf_config  # noqa: E402


def decay_mask(params):
  def decays(path, _):
    names = [getattr(k, "key", None) for k in path]
    return not (names[-1] == "bias" or (len(names) > 1 and names[-2] == "LayerNorm" and names[-1] == "scale"))

  return jax.tree_util.tree_map_with_path(decays, params)


def setup_forward(case, inputs):
  model = FlaxBertModel(hf_config(case), seed=case["seed"], dtype=jnp.dtype(case["dtype"]))
  params = model.params
  ids, mask, types = (jnp.asarray(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))

  def forward(p, i, m, t):
    out = model(i, m, t, params=p, train=False, return_dict=True)
    return out.last_hidden_state, out.pooler_output

  compiled, info = jax_common.aot_compile(jax.jit(forward), (params, ids, mask, types))

  def step():
    jax_common.block(compiled(params, ids, mask, types))

  return step, info, None


def setup_train(case, inputs):
  model = FlaxBertForMaskedLM(hf_config(case), seed=case["seed"], dtype=jnp.dtype(case["dtype"]))
  schedule = optax.join_schedules(
    [optax.linear_schedule(0.0, 1e-4, 1000), optax.linear_schedule(1e-4, 0.0, 1_000_000 - 1000)], [1000]
  )
  tx = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=decay_mask)
  params = model.params
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  batch = {k: jnp.asarray(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
  dropout_key = jax.random.key(case["seed"] + 1)

  def train_step(state, batch):
    rng = jax.random.fold_in(dropout_key, state["step"])

    def loss_fn(params):
      logits = model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        params=params,
        dropout_rng=rng,
        train=True,
      )[0]
      labels = batch["labels"]
      weights = (labels != -100).astype(jnp.float32)
      losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.maximum(labels, 0)
      )
      return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss

  compiled, info = jax_common.aot_compile(jax.jit(train_step, donate_argnums=(0,)), (state, batch))
  holder = {"state": state, "loss": None}

  def step():
    holder["state"], loss = compiled(holder["state"], batch)
    jax_common.block((holder["state"], loss))
    holder["loss"] = loss

  return step, info, holder


def build(case, inputs):
  return (setup_forward if case["mode"] == "forward" else setup_train)(case, inputs)


def versions():
  info = jax_common.versions()
  info["versions"]["transformers"] = transformers.__version__
  return info


if __name__ == "__main__":
  worker_io.serve(
    CHANNEL,
    sys.argv[1] if len(sys.argv) > 1 else "hf_flax",
    worker_io.Cases(build).handlers(),
    versions,
  )
