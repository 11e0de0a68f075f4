"""The experiment runner's entry point: flags in, the config's job run.

python -m bert_jax.main --config=configs/demo.py --workdir=runs/demo [--config.x=y ...]
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax import hostmem

# Training steps reuse freed host memory (bert_jax/hostmem.py), set before JAX starts its threads.
hostmem.keep_freed_memory()

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs, checkpoints and logs.")
_DISTRIBUTED = flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "on", "off"],
  "Start jax.distributed: auto = when the environment describes a multi-process job (TPU pod, SLURM, "
  "JAX_COORDINATOR_ADDRESS), on = always, off = never.",
)
_COMPILATION_CACHE = flags.DEFINE_string(
  "compilation_cache",
  "auto",
  "XLA's persistent compilation cache, so a restarted run loads its compiled steps: auto = "
  "$JAX_COMPILATION_CACHE_DIR when set, else <workdir>/xla_cache; off; or a directory "
  "(bert_jax/compile_cache.py).",
)
_COMPILE_ONLY = flags.DEFINE_string(
  "compile_only",
  None,
  "Compile the job's steps for a TPU slice that is not attached and report per-chip HBM, FLOPs, a roofline "
  "step time and collectives, without running or reading data (bert_jax/aot.py): a Cloud TPU accelerator type "
  "(v4-32, v5litepod-16, v5p-128, v6e-8) or JAX's form (v5p:4x4x4). Needs libtpu.",
)
_SLICES = flags.DEFINE_integer("slices", 1, "With --compile_only: this many identical slices (multi-slice).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax and grain log every save at INFO; -v 0 shows them
  from bert_jax import files

  try:  # before anything is written: a gs:// workdir would become a local folder "gs:" on each host
    files.require_local(_WORKDIR.value, "--workdir")
    files.check_config_paths(_CONFIG.value)
    from bert_jax import optim

    optim.check_config(_CONFIG.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _COMPILE_ONLY.value:
    return compile_only()
  from bert_jax import distributed

  distributed.initialize(_DISTRIBUTED.value)
  from bert_jax import compile_cache

  try:
    compile_cache.enable(_COMPILATION_CACHE.value, _WORKDIR.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  from bert_jax import stages

  try:
    stages.run_job(_CONFIG.value, _WORKDIR.value)
  except stages.UnknownJob as e:
    raise app.UsageError(str(e)) from None


def compile_only() -> None:
  """A compile-only run: one process, no distributed runtime, no XLA cache; writes only its report."""
  from bert_jax import aot, sharding, topology

  try:
    report = aot.compile_only(_CONFIG.value, _WORKDIR.value, _COMPILE_ONLY.value, _SLICES.value)
  except (topology.TopologyError, sharding.ShardingError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  if not report["fits"]:
    sys.exit(aot.EXIT_DOES_NOT_FIT)


if __name__ == "__main__":
  app.run(main)
