"""XLA's persistent compilation cache for the runner: a run restarted in its workdir (after a preemption,
a kill, a resumed sweep) loads its compiled steps from disk instead of compiling them again.

`--compilation_cache` of `python -m bert_jax.main`:
- `auto` (the default): JAX's own `JAX_COMPILATION_CACHE_DIR` when set (one cache shared by every run that
  sets it), else `<workdir>/xla_cache`;
- `off`: no cache;
- any other value: that directory.
`sweeps.py run` gives its runs one cache, ROOT/xla_cache (unless `JAX_COMPILATION_CACHE_DIR` is set): the
runs of a seed grid or of one shape compile once.
JAX keys each entry by the computation, the compile options, the devices and the jax/XLA versions, so a
stale entry is never loaded; a cached executable computes exactly what a fresh compile does. Only compiles
that took at least `jax_persistent_cache_min_compile_time_secs` (JAX's default 1 s) are written.
"""

from __future__ import annotations

import logging
import os

ENV = "JAX_COMPILATION_CACHE_DIR"
SUBDIR = "xla_cache"

log = logging.getLogger("bert_jax")


def resolve(setting: str, workdir: str, env=None) -> str | None:
  """The cache directory `setting` means for a run in `workdir`; None for no cache."""
  env = os.environ if env is None else env
  if not setting:
    raise ValueError("--compilation_cache is empty; give auto, off or a directory")
  if setting == "off":
    return None
  if setting == "auto":
    if env.get(ENV):
      return env[ENV]
    setting = workdir.rstrip("/") + "/" + SUBDIR if _remote(workdir) else os.path.join(workdir, SUBDIR)
  return setting if _remote(setting) else os.path.abspath(setting)


def _remote(path: str) -> bool:
  return "://" in path  # gs://, s3://: JAX opens these through etils.epath


def enable(setting: str, workdir: str) -> str | None:
  """Points JAX's persistent cache at the directory `setting` resolves to (before the first compile)."""
  import jax

  path = resolve(setting, workdir)
  if path is not None and not _remote(path):
    os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  log.info("XLA compilation cache: %s", path or "off")
  return path
