"""Parameters + AdamW state per device under FSDP, measured on allocated arrays (simulated CPU devices).

For each model size and each FSDP degree n, the training state is created for real on a mesh of n
devices (fsdp=n) exactly as the runner creates it, and every device's bytes are summed from the
shards it holds. Reports the largest device's bytes, the ideal total / n, and their ratio.

  .venv/bin/python experiments/benchmarks/fsdp_memory.py --variants base,large --degrees 1,2,4,8 --out OUT
"""

from __future__ import annotations

import argparse
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variants", default="base,large")
  p.add_argument("--degrees", default="1,2,4,8")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  degrees = [int(d) for d in args.degrees.split(",")]
  flags = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={max(degrees)}".strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import jax
  import numpy as np
  from jax.sharding import Mesh

  from bert_jax import files, optim, sharding, train_state
  from bert_jax.models import BertConfig, BertForPreTraining
  from configs import common

  rows = []
  for variant in args.variants.split(","):
    model = BertForPreTraining(BertConfig(**common.variant_sizes(variant)), nsp=True)
    tx = optim.make_optimizer(common.optimizer_config("adamw"), total_steps=100_000)
    total = None
    for n in degrees:
      devices = np.array(jax.devices()[:n]).reshape(1, n, 1)
      mesh = Mesh(devices, sharding.MESH_AXES)
      state, _ = train_state.create_train_state(model, tx, mesh, sharding.rules_for("fsdp"))
      per_device = {d: 0 for d in devices.flat}
      for leaf in jax.tree.leaves((state.params, state.opt_state)):
        for shard in leaf.addressable_shards:
          per_device[shard.device] += shard.data.nbytes
      total = total or sum(per_device.values())
      worst = max(per_device.values())
      rows.append((variant, n, worst, total / n, worst / (total / n)))
      print(
        f"{variant} fsdp={n}: largest device {worst / 2**20:,.1f} MiB, ideal {total / n / 2**20:,.1f} MiB",
        flush=True,
      )
      del state
  lines = [
    "# Parameters + AdamW state per device under FSDP",
    "",
    f"`python experiments/benchmarks/fsdp_memory.py --variants {args.variants} --degrees {args.degrees}`",
    "",
    "| model | FSDP devices | largest device MiB | total / devices MiB | ratio |",
    "|---|---:|---:|---:|---:|",
  ]
  for variant, n, worst, ideal, ratio in rows:
    lines.append(f"| {variant} | {n} | {worst / 2**20:,.1f} | {ideal / 2**20:,.1f} | {ratio:.3f} |")
  files.write_text(os.path.join(args.out, "fsdp_memory.md"), "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
