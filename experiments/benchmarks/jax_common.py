"""What the two JAX workers (bert_jax, hf_flax) share: ahead-of-time compilation with its timings and
XLA's memory analysis, and the versions they report. Imported in both environments: jax, flax, optax
and numpy only."""

from __future__ import annotations

import contextlib
import time

import jax


def aot_compile(jitted, args, context=None):
  """(compiled, info): trace + lower and compile timed apart, and XLA's memory plan of the executable.

  The measured iterations then call the compiled executable itself, so no later call can recompile.
  The arguments are waited for first: JAX dispatches their initialisation asynchronously, and on a
  small CPU an initialisation still running would be counted as (and slow down) the compile."""
  jax.block_until_ready(args)
  start = time.perf_counter()
  with context or contextlib.nullcontext():
    lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return compiled, {
    "lower_s": lowered_at - start,
    "compile_s": done - lowered_at,
    "xla_memory": xla_memory(compiled),
  }


def xla_memory(compiled) -> dict | None:
  """Bytes of the executable's arguments, outputs, aliased (donated) buffers and temporaries, and the
  peak they imply (arguments + outputs - aliased + temporaries); None where the backend has no analysis."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # some backends raise instead of returning None
    return None
  if analysis is None:
    return None
  names = ("argument_size", "output_size", "alias_size", "temp_size", "generated_code_size")
  values = {name: int(getattr(analysis, f"{name}_in_bytes", 0) or 0) for name in names}
  values["peak_bytes"] = (
    values["argument_size"] + values["output_size"] - values["alias_size"] + values["temp_size"]
  )
  return values


def versions() -> dict:
  import flax
  import jaxlib
  import numpy
  import optax

  device = jax.devices()[0]
  return {
    "versions": {
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "numpy": numpy.__version__,
    },
    "device": f"{device.platform}:{device.device_kind} x{jax.device_count()}",
  }


def block(tree):
  return jax.block_until_ready(tree)
