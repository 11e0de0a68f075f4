"""A real multi-process run: 2 local processes, jax.distributed over gloo on 127.0.0.1, 2 CPU devices
each; the same training as one process, and a checkpoint that restores in one process on another mesh."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from bert_jax import checkpointing, convert, sharding, train_state
from tests import helpers

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")


def test_two_processes_train_like_one_and_checkpoint_restores_elsewhere(tmp_path):
  results = helpers.two_jax_processes([WORKER, str(tmp_path)], devices_each=2, timeout=420)
  for i, (code, out) in enumerate(results):
    assert code == 0, f"process {i} failed:\n{out[-4000:]}"

  result = json.loads((tmp_path / "result.json").read_text())
  # each process fed only its own half of every batch
  assert result["rows"] == [0, 4] and json.loads((tmp_path / "rows1.json").read_text()) == [4, 8]

  batches = helpers.pretraining_batches(3)
  mesh1 = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  ref_state, ref_losses, _ = helpers.train_steps(mesh1, "dp", batches)
  np.testing.assert_allclose(result["losses"], ref_losses, rtol=1e-5)
  with np.load(tmp_path / "params.npz") as saved:
    got = {k: saved[k] for k in saved.files}
  ref = helpers.flat_params(jax.device_get(ref_state.params))
  helpers.assert_params_close(convert.unflatten(got), convert.unflatten(ref))

  # The checkpoint the two processes wrote (fsdp over 4 devices) restores here on 8 devices under tp.
  model, tx, _ = helpers.tiny_training()
  mesh = sharding.make_mesh({"data": 2, "tensor": 4})
  abstract, shardings = train_state.state_shardings(model, tx, mesh, sharding.rules_for("tp"))
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  assert ckpt.latest_step() == 3
  _, restored = ckpt.restore(checkpointing.abstract_target(abstract, shardings))
  kernel = restored.params["bert"]["encoder"]["layer_0"]["mlp"]["intermediate"]["kernel"]
  assert kernel.sharding.mesh.shape["tensor"] == 4 and kernel.sharding.spec[1] == "tensor"
  helpers.assert_params_close(jax.device_get(restored.params), jax.device_get(ref_state.params))
  assert int(restored.step) == 3
