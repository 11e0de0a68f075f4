"""Multi-process start-up: JAX's own runtime (`jax.distributed.initialize`), when asked.

Asked means any of:
- `mode="on"`, or `mode="auto"` with a cluster in the environment:
  - `JAX_COORDINATOR_ADDRESS` (host:port of process 0) with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
    (GPU or CPU clusters started by hand or by launch.sh gpu);
  - SLURM with more than one task (`SLURM_NTASKS`), which JAX reads itself;
  - a multi-host Cloud TPU slice (`TPU_WORKER_HOSTNAMES` lists several hosts), which JAX detects itself.
On CPU the cross-process collectives run over gloo.
"""

from __future__ import annotations

import logging
import os

import jax

MODES = ("auto", "on", "off")


def cluster_from_env(env=None) -> dict | None:
  """What the environment says about a multi-process job; None when it says nothing."""
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS"):
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(k)]
    if missing:
      raise ValueError(
        f"JAX_COORDINATOR_ADDRESS is set but {missing} are not; set the number of processes "
        "and this process's index (0-based) too"
      )
    return {
      "kind": "explicit",
      "coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
      "num_processes": int(env["JAX_NUM_PROCESSES"]),
      "process_id": int(env["JAX_PROCESS_ID"]),
    }
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    return {"kind": "slurm"}
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return {"kind": "tpu"}
  return None


def initialize(mode: str = "auto", env=None) -> bool:
  """Starts the multi-process runtime if `mode` and the environment ask; returns whether it did."""
  if mode not in MODES:
    raise ValueError(f"distributed mode {mode!r}; expected one of {list(MODES)}")
  if mode == "off":
    return False
  cluster = cluster_from_env(env)
  if cluster is None and mode == "auto":
    return False
  if (env or os.environ).get("JAX_PLATFORMS", "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if cluster is not None and cluster["kind"] == "explicit":
    jax.distributed.initialize(
      coordinator_address=cluster["coordinator_address"],
      num_processes=cluster["num_processes"],
      process_id=cluster["process_id"],
    )
  else:
    jax.distributed.initialize()  # TPU pods and SLURM describe themselves
  logging.info(
    "jax.distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def is_primary() -> bool:
  """Only process 0 writes logs and summaries; every process takes part in checkpointing."""
  return jax.process_index() == 0
