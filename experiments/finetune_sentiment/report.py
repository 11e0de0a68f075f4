"""Puts the two sides of the sentiment comparison in one Markdown table.

    python experiments/finetune_sentiment/report.py TORCH_RESULT.json BERT_JAX_WORKDIR

TORCH_RESULT.json is torch_finetune.py's output; BERT_JAX_WORKDIR is the fine-tuning run's workdir
(result.json and metrics.jsonl). Prints the table; nothing else is written.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bert_jax import summaries  # noqa: E402


def bert_jax_side(workdir: str) -> dict:
  with open(os.path.join(workdir, "result.json"), encoding="utf-8") as f:
    result = json.load(f)
  rows = summaries.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  epochs = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
  train_rows = [r for r in rows if "train/real_tokens_per_second" in r]
  return {
    "epochs": epochs,
    "final": result["final"]["accuracy"],
    "best": result["best"]["accuracy"],
    "train_seconds": result["train_seconds"],
    "real_tokens_per_second": result["real_tokens_per_second"],
    "steps": result["step"],
    "logged_windows": len(train_rows),
  }


def torch_side(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    result = json.load(f)
  if not result.get("complete"):
    raise SystemExit(f"{path}: the PyTorch run is not complete (epochs so far: {len(result['epochs'])})")
  return {
    "epochs": [e["validation_accuracy"] for e in result["epochs"]],
    "final": result["final_accuracy"],
    "best": result["best_accuracy"],
    "train_seconds": result["train_seconds"],
    "real_tokens_per_second": result["real_tokens_per_second"],
    "steps": result["steps"],
  }


def table(torch_result: dict, jax_result: dict) -> str:
  def pct(x):
    return f"{100 * x:.2f}%"

  lines = [
    "| | transformers + PyTorch | bert_jax | bert_jax / PyTorch |",
    "|---|---|---|---|",
  ]
  for i in range(max(len(torch_result["epochs"]), len(jax_result["epochs"]))):
    t = torch_result["epochs"][i] if i < len(torch_result["epochs"]) else None
    j = jax_result["epochs"][i] if i < len(jax_result["epochs"]) else None
    lines.append(
      f"| accuracy after epoch {i + 1} | {pct(t) if t is not None else ''} | {pct(j) if j is not None else ''} | |"
    )
  lines.append(
    f"| final accuracy | {pct(torch_result['final'])} | {pct(jax_result['final'])} | "
    f"{100 * (jax_result['final'] - torch_result['final']):+.2f} points |"
  )
  lines.append(f"| optimizer steps | {torch_result['steps']} | {jax_result['steps']} | |")
  lines.append(
    f"| train wall time (s) | {torch_result['train_seconds']:.0f} | {jax_result['train_seconds']:.0f} | "
    f"{torch_result['train_seconds'] / jax_result['train_seconds']:.2f}x faster |"
  )
  lines.append(
    f"| real (non-pad) training tokens/s | {torch_result['real_tokens_per_second']:,.0f} | "
    f"{jax_result['real_tokens_per_second']:,.0f} | "
    f"{jax_result['real_tokens_per_second'] / torch_result['real_tokens_per_second']:.2f}x |"
  )
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  print(table(torch_side(argv[0]), bert_jax_side(argv[1])))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
