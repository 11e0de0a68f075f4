"""One process of the 2-process training run in test_multiprocess.py (not a test module itself).

JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i python tests/multiprocess_worker.py OUT
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from bert_jax import checkpointing, distributed, sharding  # noqa: E402
from tests import helpers  # noqa: E402


def main(out_dir: str) -> None:
  assert distributed.initialize("auto"), "the environment should describe a 2-process job"
  assert jax.process_count() == 2 and jax.local_device_count() == 2 and jax.device_count() == 4
  # data spans the two processes (the "DCN"), fsdp the two devices inside each.
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2}, dcn={"data": 2})
  batches = helpers.pretraining_batches(3)
  rows = sharding.process_rows(mesh, 8)
  state, losses, step = helpers.train_steps(mesh, "fsdp", batches)
  assert step.compilations() == 1
  ckpt = checkpointing.Checkpointer(os.path.join(out_dir, "ckpt"))
  ckpt.save(int(state.step), state, force=True)
  ckpt.wait()
  ckpt.close()
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if distributed.is_primary():
    np.savez(os.path.join(out_dir, "params.npz"), **helpers.flat_params(params))
    with open(os.path.join(out_dir, "result.json"), "w") as f:
      json.dump({"losses": losses, "rows": [rows.start, rows.stop], "processes": jax.process_count()}, f)
  else:
    with open(os.path.join(out_dir, "rows1.json"), "w") as f:
      json.dump([rows.start, rows.stop], f)


if __name__ == "__main__":
  main(sys.argv[1])
