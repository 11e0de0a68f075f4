"""A fine-tuning grid's summary: over seeds, mean ± std per learning rate of each run's reported evaluation,
the paper's pick of one run (selection=paper), and the Markdown table of it all."""

from __future__ import annotations

import numpy as np


def summarize(results: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
  """{learning rate: {metric: {mean, std, n}}} over seeds, from each run's reported evaluation (`best`: its best
  epoch, or its last with selection=paper)."""
  by_lr: dict[str, list[dict]] = {}
  for r in results:
    by_lr.setdefault(f"{r['learning_rate']:g}", []).append(r["best"])
  summary = {}
  for lr, bests in by_lr.items():
    names = sorted(set().union(*bests))
    summary[lr] = {
      name: {
        "mean": float(np.mean([b[name] for b in bests if name in b])),
        # Sample standard deviation (ddof=1): the seeds are a sample of the run-to-run spread.
        "std": float(np.std([b[name] for b in bests if name in b], ddof=1)) if len(bests) > 1 else 0.0,
        "n": sum(name in b for b in bests),
      }
      for name in names
    }
  return summary


def choose_run(results: list[dict], metric: str, mode: str) -> dict:
  """The paper's pick: the run (learning rate and restart) whose reported dev score is best; on a tie the
  first in grid order."""
  key = metric.removeprefix("eval/")
  sign = 1.0 if mode == "max" else -1.0
  chosen = max(results, key=lambda r: (sign * r["best"][key], -results.index(r)))
  return {"learning_rate": chosen["learning_rate"], "seed": chosen["seed"], "metrics": chosen["best"]}


_PROTOCOLS = {
  "best_epoch": "mean ± std over seeds of each run's best epoch",
  "paper": "the BERT paper's protocol: each run evaluated at the end of training; the best learning rate and "
  "restart on dev is the result (mean ± std over seeds shown beside it)",
}


def summary_markdown(
  task: str, summary: dict, metric: str, selection: str = "best_epoch", chosen=None
) -> str:
  names = sorted({n for per_lr in summary.values() for n in per_lr})
  key = metric.removeprefix("eval/")
  # The selection metric, the other metrics of the first evaluation set, and the selection metric of the others
  # (MNLI mismatched, CoNLL's test set).
  others = [n for n in names if "/" in n and n.rsplit("/", 1)[1] == key]
  names = [key] + [n for n in names if n != key and "/" not in n and not n.endswith("_total")] + others
  lines = [
    f"# {task}: {'final epoch' if selection == 'paper' else 'best epoch'} of each run, mean ± std over seeds",
    "",
    f"Selection: `{selection}`, {_PROTOCOLS[selection]}.",
    "",
    "| learning rate | seeds | " + " | ".join(names) + " |",
    "|---|---|" + "---|" * len(names),
  ]
  for lr, per in summary.items():
    n = max(v["n"] for v in per.values())
    cells = [f"{per[m]['mean']:.4f} ± {per[m]['std']:.4f}" if m in per else "" for m in names]
    lines.append(f"| {lr} | {n} | " + " | ".join(cells) + " |")
  if chosen is not None:
    values = ", ".join(f"{m} {chosen['metrics'][m]:.4f}" for m in names if m in chosen["metrics"])
    lines += [
      "",
      f"Chosen on dev: learning rate {chosen['learning_rate']:g}, seed {chosen['seed']}: {values}.",
    ]
  return "\n".join(lines) + "\n"
