"""The bert_jax benchmark worker (main .venv): forward and MLM train step through the library's own code,
and the matmul ceiling of the run.

forward: `BertModel` (encoder + pooler), eval mode, `jax.jit` as the Predictor does.
train:   `BertForPreTraining(nsp=False)` + the "mlm" objective + bert_jax's AdamW (optim.make_optimizer,
         clipping off as in the other peers), stepped by `train_state.make_train_step` over a
         one-device-per-device mesh with the state donated: the training loop's own step. MLM logits at
         the masked positions only (BERT's pretraining, --mlm-positions masked) or at every position.

Run by bench.py: `python peer_bert_jax.py bert_jax`; requests on stdin (see worker_io.py).
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)  # configs/ is a top-level package of the repository

import worker_io  # noqa: E402

CHANNEL = worker_io.protocol_channel()  # before any library can print to stdout

import bert_jax  # noqa: E402

bert_jax.hostmem.keep_freed_memory()  # as the runner does, before JAX starts its threads
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jax_common  # noqa: E402
from bert_jax import objectives, optim, sharding, train_state  # noqa: E402
from bert_jax.models import BertConfig, BertForPreTraining, BertModel  # noqa: E402
from configs import common  # noqa: E402

MATMULS: dict[tuple, tuple] = {}
# Peer "bert_jax_scan": the same model with its encoder layers under nn.scan (one compiled layer body).
SCAN_LAYERS = len(sys.argv) > 1 and sys.argv[1] == "bert_jax_scan"


def bert_config(case) -> BertConfig:
  return BertConfig(
    vocab_size=case["vocab_size"],
    max_position_embeddings=case["max_positions"],
    dtype=case["dtype"],
    param_dtype="float32",
    scan_layers=SCAN_LAYERS,
    attention_kernel=case.get("attention_kernel", "xla"),
    **case["sizes"],
  )


def setup_forward(case, inputs):
  model = BertModel(bert_config(case))
  ids, mask, types = (jnp.asarray(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
  init = jax.jit(lambda key: nn.meta.unbox(model.init(key, ids[:1, :8]))["params"])
  params = init(jax.random.key(case["seed"]))
  forward = jax.jit(lambda p, i, m, t: model.apply({"params": p}, i, m, t))
  compiled, info = jax_common.aot_compile(forward, (params, ids, mask, types))

  def step():
    jax_common.block(compiled(params, ids, mask, types))

  return step, info, None


def setup_train(case, inputs):
  model = BertForPreTraining(bert_config(case), nsp=False)
  # BERT's AdamW (betas 0.9/0.999, eps 1e-6, weight decay 0.01 off biases and LayerNorm, warmup + linear
  # decay); no gradient clipping, as in the other peers, so every peer does the same work.
  tx = optim.make_optimizer(
    common.optimizer_config("adamw", grad_clip=0.0, warmup_steps=1000), total_steps=1_000_000
  )
  mesh, rules = sharding.from_config(common.mesh_config("dp"))
  state, shardings = train_state.create_train_state(model, tx, mesh, rules, seed=case["seed"])
  step_fn = train_state.make_train_step(model, tx, objectives.get("mlm"), mesh, rules, shardings)
  if case["mlm_positions"] == "masked":
    keys = (
      "input_ids",
      "attention_mask",
      "token_type_ids",
      "masked_positions",
      "masked_ids",
      "masked_weights",
    )
    host = {k: inputs[k] for k in keys}
  else:  # logits at every position; the loss still reads only the masked ones (HuggingFace's labels)
    labels = inputs["labels"]
    host = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    host["masked_ids"] = np.maximum(labels, 0).astype(np.int32)
    host["masked_weights"] = (labels != -100).astype(np.float32)
  batch = sharding.global_batch(host, mesh)
  # The ShardedStep's own jitted function, lowered under its mesh and rules (what its __call__ does).
  compiled, info = jax_common.aot_compile(
    step_fn._jitted, (state, batch), train_state.mesh_context(step_fn.mesh, step_fn.rules)
  )
  holder = {"state": state, "loss": None}

  def step():
    holder["state"], metrics = compiled(holder["state"], batch)
    jax_common.block((holder["state"], metrics))
    holder["loss"] = metrics["loss"]

  return step, info, holder


def build(case, inputs):
  return (setup_forward if case["mode"] == "forward" else setup_train)(case, inputs)


def ceiling(request):
  """Seconds per call of XLA matmuls [m, k] x [k, n] in the run's dtype, compiled once per shape."""
  dtype = jnp.dtype(request["dtype"])
  times = []
  for m, k, n in request["shapes"]:
    key = (m, k, n, dtype.name)
    if key not in MATMULS:
      rng = np.random.default_rng(0)
      a = jnp.asarray(rng.standard_normal((m, k), np.float32), dtype)
      b = jnp.asarray(rng.standard_normal((k, n), np.float32), dtype)
      f = jax.jit(jnp.matmul).lower(a, b).compile()
      f(a, b).block_until_ready()
      MATMULS[key] = (f, a, b)
    f, a, b = MATMULS[key]
    times.append(
      worker_io.time_iterations(lambda f=f, a=a, b=b: f(a, b).block_until_ready(), request["iters"])
    )
  return {"times": times}


def versions():
  info = jax_common.versions()
  info["versions"]["bert_jax"] = getattr(bert_jax, "__version__", "repo")
  return info


if __name__ == "__main__":
  worker_io.serve(
    CHANNEL,
    sys.argv[1] if len(sys.argv) > 1 else "bert_jax",
    {**worker_io.Cases(build).handlers(), "ceiling": ceiling},
    versions,
  )
