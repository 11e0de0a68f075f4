"""What a training loop needs around its steps, shared by pretraining (train.py) and fine-tuning
(finetune.py): stopping on SIGTERM, stopping on NaN/Inf, metrics and parameters brought to the host,
the ETA shown in progress lines."""

from __future__ import annotations

import logging
import math
import signal

import jax

log = logging.getLogger("bert_jax.train")


class TrainingError(RuntimeError):
  pass


class Preemption:
  """SIGTERM (a preemption notice, a scheduler's stop) sets a flag the loop checks every step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    log.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def host_metrics(metrics) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def check_finite(metrics: dict[str, float], step: int) -> None:
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    raise TrainingError(
      f"non-finite metrics at step {step}: {bad}; the run stops here (the last checkpoint "
      "is intact). Lower the learning rate, enable grad_clip, or check the data."
    )


def eta(seconds: float) -> str:
  seconds = int(seconds)
  return (
    f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 3600
    else f"{seconds // 60}m{seconds % 60:02d}s"
  )


def host_tree(tree):
  """A pytree of (possibly sharded) arrays as numpy on this host; across processes each gathers the whole."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def from_primary(value):
  """Process 0's value on every process (a decision all must take together, e.g. whether to save)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils

  return multihost_utils.broadcast_one_to_all(value)


def should_stop(preemption: Preemption, checkpointer, step: int, sync_every: int = 10) -> bool:
  """Whether every process stops after `step`: a SIGTERM reaches one process, but saving is collective, so
  the flag is shared (every `sync_every` steps across processes) together with the runtime's own notice."""
  requested = preemption.requested
  if jax.process_count() > 1:
    if step % sync_every:
      requested = False
    else:
      from jax.experimental import multihost_utils

      requested = bool(multihost_utils.process_allgather(jax.numpy.asarray(requested)).any())
  return requested or checkpointer.reached_preemption(step)
