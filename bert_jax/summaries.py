"""Metrics out of a run: TensorBoard event files (tensorboardX, no TensorFlow), JSON lines, a PNG of
the loss curves. Only process 0 writes."""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from bert_jax import files

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Writes scalars to `workdir/tensorboard/` and `workdir/metrics.jsonl`.

  On resume from step S, lines for steps after S (written before an interruption) are dropped first,
  so the file holds each step once and reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self.tensorboard_dir = os.path.join(workdir, "tensorboard")
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
      files.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    from tensorboardX import SummaryWriter

    self._tb = SummaryWriter(self.tensorboard_dir, purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    for name, value in values.items():
      self._tb.add_scalar(name, value, step)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(path: str) -> list[dict]:
  records = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        # A run killed mid-write can leave a torn last line; anything else is corruption.
        if f.readline():
          raise ValueError(f"{path}:{number}: not a JSON line") from None
    return records


def plot_curves(
  metrics_path: str,
  out_path: str,
  names=("train/loss", "eval/loss", "train/mlm_accuracy", "eval/mlm_accuracy"),
) -> str:
  """Loss and accuracy curves (train and held-out) from metrics.jsonl as a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = read_metrics(metrics_path)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name in names:
    points = [(r["step"], r[name]) for r in records if name in r]
    if not points:
      continue
    steps, values = np.array(points).T
    ax = axes[0] if name.endswith("loss") else axes[1]
    ax.plot(steps, values, marker="." if name.startswith("eval") else None, label=name)
  for ax, title in zip(axes, ("loss", "MLM accuracy")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.has_data():
      ax.legend()
  fig.tight_layout()
  with files.atomic_path(out_path) as tmp:
    fig.savefig(tmp, format="png", dpi=100)
  plt.close(fig)
  return out_path
