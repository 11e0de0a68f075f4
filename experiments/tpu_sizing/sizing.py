"""The TPU sizing guide: BERT-base and BERT-large pretraining compiled for Cloud TPU slices, on a CPU.

    python experiments/tpu_sizing/sizing.py --out experiments/tpu_sizing/results   # all cells, then the table
    python experiments/tpu_sizing/sizing.py --out DIR --table-only                 # rebuild the table

Each cell is a compile-only run (bert_jax/aot.py) of the pretraining train step for one workload, slice and
sharding strategy, through the runner's own code; cells already in DIR/cells.jsonl are skipped, so an
interrupted run continues. The table (DIR/sizing.md, copied to docs/tpu_sizing.md) gives per-chip HBM, whether
it fits, the step time at 100% MFU (the compute roofline) and the days BERT's schedule would take at 40% and 100%.

Workloads (bf16 compute, float32 parameters, scanned layers, as a pod run would set them):
  phase 1: seq 128, 20 predictions, global batch 256 (BERT's first 90% of 1M steps)
  phase 2: seq 512, 80 predictions, global batch 256 (its last 10%)
  mlperf:  BERT-large, seq 512, 76 predictions, LAMB, global batch 256 (the batch of the MLPerf BERT
           reference convergence points; MLPerf submissions use larger batches on larger slices)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

TOPOLOGIES = ("v4-8", "v4-32", "v5litepod-16", "v5p-8", "v5p-32", "v6e-8")
# fsdp+remat: fsdp with every layer recomputed in the backward pass (model.remat=full), for activations too big to keep.
STRATEGIES = ("dp", "fsdp", "fsdp_tp", "fsdp+remat")
# Listed in the order they are compiled: BERT-large first (the days estimate needs both of its phases).
WORKLOADS = {  # name: (variant, seq, predictions, batch, optimizer)
  "large phase 1": ("large", 128, 20, 256, "adamw"),
  "large phase 2": ("large", 512, 80, 256, "adamw"),
  "large mlperf": ("large", 512, 76, 256, "lamb"),
  "base phase 1": ("base", 128, 20, 256, "adamw"),
  "base phase 2": ("base", 512, 80, 256, "adamw"),
}
DISPLAY = ("base phase 1", "base phase 2", "large phase 1", "large phase 2", "large mlperf")
# Recomputing layers is for activations too big to keep: seq 512 only.
REMAT_WORKLOADS = ("large phase 2", "large mlperf", "base phase 2")
BERT_STEPS = 1_000_000  # BERT's schedule: 90% at seq 128, 10% at seq 512
PAPER = "BERT-large: 4 days on 16 Cloud TPUs (64 TPU chips, v2/v3) for 1M steps (Devlin et al. 2019, section A.2)"


def config_for(workload: str, strategy: str):
  from configs import pretrain

  variant, seq, predictions, batch, optimizer = WORKLOADS[workload]
  config = pretrain.get_config(f"variant={variant},objective=mlm_nsp,optimizer={optimizer}")
  with config.unlocked():
    config.model.vocab_size = 30522
    config.model.dtype = "bfloat16"
    config.model.scan_layers = True
    config.data.max_seq_length = seq
    config.data.masking.max_predictions = predictions
    config.batch_size = batch
    config.eval_every = 0
    if strategy == "fsdp+remat":
      strategy, config.model.remat = "fsdp", "full"
    config.mesh.strategy = strategy
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = {"dp": (-1, 1, 1), "fsdp": (1, -1, 1)}.get(
      strategy, (1, -1, 2)
    )
  return config


def run_cell(workload, target, strategy, scratch) -> dict:
  from bert_jax import aot

  cell = {"workload": workload, "topology": target, "strategy": strategy}
  start = time.perf_counter()
  try:
    report = aot.compile_only(config_for(workload, strategy), scratch, target)
  except ValueError as e:  # a batch or mesh that does not divide over this slice
    cell["error"] = str(e).splitlines()[0]
    return cell
  finally:
    gc.collect()
  (program,) = report["programs"]
  cell.update(
    chips=report["target"]["chips"],
    chip=report["target"]["chip"],
    hbm_total=program["hbm"]["total"],
    hbm_chip=program["hbm"]["chip"],
    fits=program["hbm"]["fits"],
    refused=bool(program.get("compiler_refused")),
    roofline_s=program["roofline"]["seconds"] if program["roofline"] else None,
    bound=program["roofline"]["bound"] if program["roofline"] else None,
    model_flops_per_chip=program["roofline"]["model_flops_per_chip"] if program["roofline"] else None,
    peak=report["target"]["peak_bf16_flops"],
    seconds=time.perf_counter() - start,
    versions=report["versions"],
  )
  return cell


def days(seconds_per_step: float | None, steps: float) -> str:
  return "-" if not seconds_per_step else f"{seconds_per_step * steps / 86400:.1f}"


def step_seconds(cell: dict, mfu: float) -> float | None:
  """Seconds per step at this MFU: the model's FLOPs per chip over mfu x the chip's peak bf16 FLOP/s."""
  return cell["model_flops_per_chip"] / (mfu * cell["peak"]) if cell.get("model_flops_per_chip") else None


def table(cells: list[dict]) -> str:
  lines = [
    "| workload | slice | strategy | HBM per chip | fits | step at 100% MFU | 1M steps at 40% MFU | at 100% MFU |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for c in cells:
    if "error" in c:
      lines.append(f"| {c['workload']} | {c['topology']} | {c['strategy']} | - | {c['error']} | | | |")
      continue
    fits = "yes" if c["fits"] else ("**no** (compiler)" if c["refused"] else "**no**")
    peak_step = step_seconds(c, 1.0)
    timing = (
      f"{1e3 * peak_step:.0f} ms | {days(step_seconds(c, 0.4), BERT_STEPS)} d | {days(peak_step, BERT_STEPS)} d"
      if c["fits"] and peak_step
      else "- | - | -"
    )
    lines.append(
      f"| {c['workload']} | {c['topology']} ({c['chips']} x {c['chip']}) | {c['strategy']} | "
      f"{c['hbm_total'] / 2**30:.1f} / {c['hbm_chip'] / 2**30:.0f} GiB | {fits} | {timing} |"
    )
  # BERT-large's whole schedule (90% phase 1 + 10% phase 2) per slice, with a fitting strategy for each phase.
  lines += ["", f"BERT-large's 1M steps (0.9M at seq 128 + 0.1M at seq 512) on each slice where both phases fit; {PAPER}:", ""]
  lines += ["| slice | phase 1 / phase 2 strategy | at 40% MFU | at 100% MFU |", "|---|---|---|---|"]
  for target in dict.fromkeys(c["topology"] for c in cells):
    best = {}
    for phase in ("large phase 1", "large phase 2"):
      fitting = [c for c in cells if c["topology"] == target and c["workload"] == phase and c.get("fits")]
      if fitting:  # no recomputation if a strategy fits without it; then the least HBM (room for more batch)
        best[phase] = min(fitting, key=lambda c: (c["strategy"] == "fsdp+remat", c["hbm_total"]))
    if len(best) < 2:
      missing = [p for p in ("large phase 1", "large phase 2") if p not in best]
      lines.append(f"| {target} | {', '.join(missing)}: no fitting strategy compiled | | |")
      continue
    p1, p2 = best["large phase 1"], best["large phase 2"]

    def total(mfu):
      return 0.9e6 * step_seconds(p1, mfu) + 0.1e6 * step_seconds(p2, mfu)

    lines.append(
      f"| {target} | {p1['strategy']} / {p2['strategy']} | {total(0.4) / 86400:.1f} d | {total(1.0) / 86400:.1f} d |"
    )
  lines += [
    "",
    "HBM: XLA's memory analysis of the compiled train step (arguments + temporaries + outputs not aliased + code); "
    "**no** (compiler): the TPU compiler refused the program for want of HBM, and the figure is what it said it "
    "needed. Step times are the model's FLOPs per step and chip (6 x matmul parameters per token + attention; "
    "equal to XLA's count within 0.1% for an unscanned 4-layer model) over the chip's peak bf16 FLOP/s: 100% MFU "
    "is the compute roofline, 40% a good real run. fsdp+remat recomputes every layer's forward in the backward "
    "pass, about a third more FLOPs than the model's: at the same hardware utilization its steps take about 1.33x "
    "the times shown (MFU counts the model's FLOPs only). XLA's own roofline is not used here: these steps scan their "
    "layers, and XLA's cost analysis counts a scan's body once (docs/tpu.md).",
  ]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
  parser.add_argument("--strategies", default=",".join(STRATEGIES))
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--table-only", action="store_true")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "cells.jsonl")
  done = []
  if os.path.exists(path):
    with open(path) as f:
      done = [json.loads(line) for line in f if line.strip()]
  seen = {(c["workload"], c["topology"], c["strategy"]) for c in done}
  if not args.table_only:
    scratch = os.path.join(args.out, "scratch")
    for workload in args.workloads.split(","):
      for target in args.topologies.split(","):
        for strategy in args.strategies.split(","):
          if (workload, target, strategy) in seen or (strategy == "fsdp+remat" and workload not in REMAT_WORKLOADS):
            continue
          cell = run_cell(workload, target, strategy, scratch)
          done.append(cell)
          with open(path, "a") as f:  # one line per finished cell: an interrupted run loses at most one
            f.write(json.dumps(cell) + "\n")
          print(json.dumps({k: v for k, v in cell.items() if k != "versions"}), flush=True)
  order = {w: i for i, w in enumerate(DISPLAY)}
  done.sort(key=lambda c: (order.get(c["workload"], 99), TOPOLOGIES.index(c["topology"]) if c["topology"] in TOPOLOGIES else 99, c["strategy"]))
  versions = next((c["versions"] for c in done if "versions" in c), {})
  header = (
    "# TPU sizing guide\n\nMade on a CPU machine by compiling each train step for the slice with the real TPU compiler "
    f"(jax {versions.get('jax')}, libtpu {versions.get('libtpu')}):\n\n    python experiments/tpu_sizing/sizing.py "
    "--out experiments/tpu_sizing/results\n\n"
  )
  with open(os.path.join(args.out, "sizing.md"), "w") as f:
    f.write(header + table(done))
  print(os.path.join(args.out, "sizing.md"))


if __name__ == "__main__":
  main()
