"""Orbax checkpoints of the train state: saved by every process, each writing its own shards, and
restored onto whatever mesh and strategy the restoring run uses (the target's shardings decide)."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def abstract_target(abstract_state, shardings):
  """ShapeDtypeStructs carrying the shardings to restore into: a different mesh is just different shardings."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
  )


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int | None = 3, save_interval_steps: int = 1):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state, force: bool = False) -> bool:
    return self.manager.save(
      int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=force
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, target, step: int | None = None):
    """Restores into `target` (see abstract_target); the latest step by default."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
