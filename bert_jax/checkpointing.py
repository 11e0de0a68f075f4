"""Orbax checkpoints: train state, data-iterator position and the config, saved together.

Every process saves its own shards; a restore lays the arrays out by the target's shardings, so a
checkpoint restores onto any mesh or strategy. Orbax writes each step into a temporary directory and
renames it when complete: an interrupted write never replaces the last good checkpoint. A step that
fails to restore (corrupted files) is reported with its path and the previous step is tried.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class CheckpointError(RuntimeError):
  pass


def abstract_target(abstract_state, shardings):
  """ShapeDtypeStructs carrying the shardings to restore into: a different mesh is just different shardings."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
  )


class Checkpointer:
  """Keeps the last `max_to_keep` steps, plus the best by `best_metric` when given (saves that carry
  metrics compete for best; others only for latest)."""

  def __init__(
    self, directory: str, max_to_keep: int = 3, best_metric: str | None = None, best_mode: str = "max"
  ):
    self.directory = os.path.abspath(directory)
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode={best_mode!r}; expected 'max' or 'min'")
    keep: list = [policies.LatestN(n=max_to_keep)]
    if best_metric:
      keep.append(
        policies.BestN(
          get_metric_fn=lambda m: m[best_metric],
          reverse=best_mode == "min",
          n=1,
          keep_checkpoints_without_metrics=False,
        )
      )
    options = ocp.CheckpointManagerOptions(
      create=True, preservation_policy=policies.AnyPreservationPolicy(keep), cleanup_tmp_directories=True
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def save(
    self,
    step: int,
    state,
    *,
    data_iterator=None,
    config: dict | None = None,
    metrics: dict | None = None,
    force: bool = False,
  ) -> bool:
    items: dict[str, Any] = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      import grain

      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    return self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=force)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, target, step: int | None = None, *, data_iterator=None, fall_back: bool = True):
    """Restores the train state into `target` (see abstract_target) and, when given, the data
    iterator in place. Returns (step, state). Without `step`, the newest step that restores cleanly."""
    steps = [step] if step is not None else list(reversed(self.all_steps()))
    if not steps:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    errors, damaged = [], []
    for s in steps:
      items: dict[str, Any] = {"state": ocp.args.StandardRestore(target)}
      if data_iterator is not None:
        import grain

        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # Orbax/tensorstore raise many types for missing or damaged files
        path = os.path.join(self.directory, str(s))
        logging.error(
          "checkpoint %s could not be restored (%s: %s)%s",
          path,
          type(e).__name__,
          e,
          "; trying the previous one" if fall_back else "",
        )
        errors.append(f"{path}: {type(e).__name__}: {str(e)[:300]}")
        damaged.append(s)
        if not fall_back:
          break
        continue
      if damaged:
        self._set_aside(damaged)
      return s, restored["state"]
    raise CheckpointError("no checkpoint could be restored:\n" + "\n".join(errors))

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged steps to STEP.damaged-N: kept for inspection, out of the way of new saves."""
    if jax.process_index() == 0:
      for s in steps:
        path = os.path.join(self.directory, str(s))
        n = 0
        while os.path.exists(f"{path}.damaged-{n}"):
          n += 1
        os.rename(path, f"{path}.damaged-{n}")
        logging.warning("set aside damaged checkpoint %s as %s.damaged-%d", path, path, n)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("bert_jax:checkpoint-set-aside")
    self.manager.reload()

  def restore_data(self, step: int, data_iterator) -> None:
    """Moves a fresh data iterator to where it was at `step` (the state is restored separately)."""
    import grain

    self.manager.restore(
      step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator))
    )

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a preemption notice reached any (multi-host TPU runtimes)."""
    return self.manager.reached_preemption(step)

  def close(self) -> None:
    self.manager.close()
