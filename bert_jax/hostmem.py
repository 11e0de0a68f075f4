"""Host memory: keep the memory XLA frees for the next step instead of handing it back to the kernel.

XLA on CPU allocates each step's temporaries (activations, gradients: hundreds of MB) with malloc and frees
them when the step ends. glibc serves large blocks, and many smaller ones from worker threads, with freshly
mapped pages and unmaps them on free, so every step page-faults all of its temporaries in again and the kernel
zeroes them: measured 89,000 minor page faults (349 MiB) per all-MiniLM-L6-v2 training step at 15 x 64, 18% of
the step's CPU time spent in the kernel. With one malloc arena, no mmap'd blocks and no trimming, freed blocks
are reused as they are: 0-33,000 faults per step and the step 1.06-1.28x faster
(experiments/benchmarks/README.md).

The cost: a process keeps its peak heap (memory freed is reused, not returned), and all its threads share one
malloc lock, which slowed compile-bound work: tests/test_packing.py
(compile-bound) took 31-37 s with these settings against 29 s without; a training run compiles once and then
steps. So the runner (`python -m bert_jax.main`) and the benchmarks apply them, before JAX starts its threads;
`import bert_jax` applies them only with BERT_JAX_MALLOC=keep. BERT_JAX_MALLOC=system keeps glibc's defaults
everywhere. The equivalent environment for any process, set before it starts:
MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "BERT_JAX_MALLOC"
# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))

_state: dict[str, bool] = {}


def keep_freed_memory(by_default: bool = True) -> bool:
  """Applies the settings above once per process, unless BERT_JAX_MALLOC says otherwise (`by_default`: whether
  to apply them when it is unset). True if they are in effect."""
  choice = os.environ.get(ENV, "")
  if choice not in ("", "keep", "system"):
    raise ValueError(f"{ENV}={choice!r}: expected 'keep' (reuse freed memory) or 'system' (glibc's defaults)")
  if choice == "system" or (choice == "" and not by_default):
    return _state.get("applied", False)
  if "applied" not in _state:
    _state["applied"] = _apply()
  return _state["applied"]


def in_effect() -> bool:
  """Whether this process runs with the settings (applied by keep_freed_memory)."""
  return _state.get("applied", False)


def _apply() -> bool:
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # glibc only: musl and others have no mallopt with these parameters
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all(mallopt(param, value) == 1 for param, value in SETTINGS)
