"""Turns bench.py's raw times into the summary, results.md and throughput.png.

    python experiments/benchmarks/report.py OUT_DIR     # redo results.md and the plot from results.json

Statistics pool every timed iteration of a case and peer over all rounds: the median is the figure of
record, the interquartile range and min-max its spread. The speed-up of bert_jax over a peer is the
peer's median time over bert_jax's; its range is that ratio round by round (the two ran minutes apart at
most, so slow phases of the machine cancel). MFU: the peer's model FLOPs per second over the fastest
XLA matmul rate measured in the same run.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import cases as cases_lib  # noqa: E402
from bert_jax import files  # noqa: E402

_JAX_PEERS = ("bert_jax", "hf_flax", "bert_jax_scan")


def quantile(sorted_values: list[float], q: float) -> float:
  """Linear interpolation between closest ranks (numpy's default)."""
  position = q * (len(sorted_values) - 1)
  low = int(position)
  high = min(low + 1, len(sorted_values) - 1)
  return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def stats(values: list[float]) -> dict:
  v = sorted(values)
  return {
    "n": len(v),
    "median": quantile(v, 0.5),
    "p25": quantile(v, 0.25),
    "p75": quantile(v, 0.75),
    "min": v[0],
    "max": v[-1],
  }


def ceiling_summary(ceiling: dict) -> dict:
  shapes = []
  for (m, k, n), rounds in zip(ceiling["shapes"], ceiling["times"]):
    flat = [t for r in rounds for t in r]
    if not flat:
      continue
    s = stats(flat)
    flops = 2.0 * m * k * n
    shapes.append(
      {
        "shape": [m, k, n],
        "gflops_median": flops / s["median"] / 1e9,
        "gflops_min": flops / s["max"] / 1e9,
        "gflops_max": flops / s["min"] / 1e9,
      }
    )
  best = max(shapes, key=lambda s: s["gflops_median"]) if shapes else None
  return {
    "dtype": ceiling["dtype"],
    "shapes": shapes,
    "gflops": best["gflops_median"] if best else None,
    "from_shape": best["shape"] if best else None,
  }


def _case(case_id: str, entry: dict) -> cases_lib.Case:
  return cases_lib.Case(entry["mode"], entry["variant"], entry["sizes"], entry["batch"], entry["length"])


def summarize(results: dict) -> dict:
  ceiling = ceiling_summary(results["ceiling"])
  mlm_positions = results["meta"]["settings"]["mlm_positions"]
  vocab = results["meta"]["settings"]["vocab_size"]
  summary = {"ceiling": ceiling, "cases": {}}
  for case_id, entry in results["cases"].items():
    case = _case(case_id, entry)
    rows = {}
    for peer, data in entry["peers"].items():
      flat = [t for r in data["times"] for t in r]
      row = {"error": data.get("error")}
      setup = data.get("setup") or {}
      if flat:
        s = stats(flat)
        flops = cases_lib.model_flops(peer, case, mlm_positions, vocab)
        row.update(
          time_s=s,
          tokens_per_s=case.tokens / s["median"],
          sequences_per_s=case.batch / s["median"],
          tokens_per_s_p25_p75=[case.tokens / s["p75"], case.tokens / s["p25"]],
          model_flops=flops,
          gflops=flops / s["median"] / 1e9,
          logits_positions=cases_lib.logits_positions(peer, case, mlm_positions)
          if case.mode == "train"
          else None,
        )
        if ceiling["gflops"]:
          row["mfu"] = row["gflops"] / ceiling["gflops"]
      if "compile_s" in setup:
        row["compile_s"] = setup["lower_s"] + setup["compile_s"]
      elif peer == "torch_compile" and "first_call_s" in setup and flat:
        row["compile_s"] = setup["first_call_s"] - row["time_s"]["median"]  # the first call minus one step
      row["first_call_s"] = setup.get("first_call_s")
      memory = setup.get("xla_memory") or {}
      row["xla_peak_mb"] = memory["peak_bytes"] / 2**20 if "peak_bytes" in memory else None
      row["rss_delta_mb"] = setup["max_rss_delta_bytes"] / 2**20 if "max_rss_delta_bytes" in setup else None
      rows[peer] = row
    ours = entry["peers"].get("bert_jax", {}).get("times", [])
    if ours and "time_s" in rows.get("bert_jax", {}):
      for peer, row in rows.items():
        if peer == "bert_jax" or "time_s" not in row:
          continue
        row["speedup_of_bert_jax"] = row["time_s"]["median"] / rows["bert_jax"]["time_s"]["median"]
        per_round = [
          stats(theirs)["median"] / stats(mine)["median"]
          for mine, theirs in zip(ours, entry["peers"][peer]["times"])
          if mine and theirs
        ]
        if per_round:
          row["speedup_per_round"] = [min(per_round), max(per_round)]
    summary["cases"][case_id] = rows
  return summary


def _f(value, spec: str, missing: str = "—") -> str:
  return missing if value is None else format(value, spec)


def markdown(results: dict) -> str:
  summary = results.get("summary") or summarize(results)
  meta, settings = results["meta"], results["meta"]["settings"]
  machine = meta["machine"]
  lines = [
    "# bert_jax and its peers: benchmark results",
    "",
    f"- Date: {meta['date_utc']}; wall time {_f(meta.get('wall_s'), '.0f')} s",
    f"- Command: `{meta['command']}`",
    f"- Machine: {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable), "
    f"{machine['memory_gb']} GiB; {machine['platform']}; load average at start "
    f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}"
    + (
      f", at end {', '.join(f'{x:.2f}' for x in machine['load_average_at_end'])}"
      if "load_average_at_end" in machine
      else ""
    ),
    f"- Settings: {settings['rounds']} interleaved rounds ({settings['order']}) x {settings['iters']} timed "
    f"iterations after {settings['warmup']} untimed warm-up calls; {settings['dtype']}; vocabulary "
    f"{settings['vocab_size']}, random weights and tokens, no padding; bert_jax MLM logits at "
    f"{'the masked positions only' if settings['mlm_positions'] == 'masked' else 'every position'}; "
    f"JAX_PLATFORMS={settings['jax_platforms']}; host malloc: "
    + (
      "every peer keeps freed memory (--malloc kept)"
      if settings.get("malloc") == "kept"
      else "bert_jax keeps freed memory (bert_jax/hostmem.py), the others glibc's defaults"
    ),
  ]
  if meta.get("failure"):
    lines.append(f"- **The run stopped early**: {meta['failure'].splitlines()[0]}")
  if meta.get("environment"):
    lines.append(f"- Environment: {', '.join(f'{k}={v}' for k, v in meta['environment'].items())}")
  lines += ["", "| peer | versions | device |", "|---|---|---|"]
  for peer, hello in meta["peers"].items():
    versions = ", ".join(f"{k} {v}" for k, v in hello.get("versions", {}).items())
    lines.append(f"| {peer} | {versions} | {hello.get('device', '')} |")

  ceiling = summary["ceiling"]
  if ceiling["shapes"]:
    lines += [
      "",
      f"## Matmul ceiling (XLA, {ceiling['dtype']}, measured by the bert_jax worker each round)",
      "",
      "| [m, k] x [k, n] | median GFLOP/s | min–max |",
      "|---|---:|---:|",
    ]
    for s in ceiling["shapes"]:
      m, k, n = s["shape"]
      lines.append(
        f"| [{m}, {k}] x [{k}, {n}] | {s['gflops_median']:.1f} "
        f"| {s['gflops_min']:.1f}–{s['gflops_max']:.1f} |"
      )
    lines += ["", f"Ceiling for MFU: **{ceiling['gflops']:.1f} GFLOP/s** (the fastest shape's median)."]

  for mode in cases_lib.MODES:
    ids = [cid for cid, e in results["cases"].items() if e["mode"] == mode]
    if not ids:
      continue
    title = "Forward (inference, eval mode)" if mode == "forward" else "Training step (MLM, AdamW)"
    lines += [
      "",
      f"## {title}",
      "",
      "| case | peer | median ms | IQR ms | min–max ms | tokens/s | seq/s | bert_jax speed-up | GFLOP/s "
      "| MFU | compile s | first call s | XLA peak MB | RSS +MB |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cid in ids:
      for peer, row in summary["cases"][cid].items():
        label = cid.split("/", 1)[1]
        if mode == "train" and row.get("logits_positions"):
          label += f" (logits at {row['logits_positions']}/seq)"
        if "time_s" not in row:
          error = (row.get("error") or "no times").splitlines()[0][:120]
          lines.append(f"| {label} | {peer} | {error} |" + " |" * 11)
          continue
        t = row["time_s"]
        if peer == "bert_jax":
          speedup = "1 (reference)"
        elif "speedup_of_bert_jax" in row:
          low, high = row.get("speedup_per_round", [None, None])
          speedup = f"{row['speedup_of_bert_jax']:.2f}x ({_f(low, '.2f')}–{_f(high, '.2f')})"
        else:
          speedup = "—"
        lines.append(
          f"| {label} | {peer} | {1e3 * t['median']:.2f} | {1e3 * t['p25']:.2f}–{1e3 * t['p75']:.2f} "
          f"| {1e3 * t['min']:.2f}–{1e3 * t['max']:.2f} | {row['tokens_per_s']:,.0f} "
          f"| {row['sequences_per_s']:,.2f} "
          f"| {speedup} | {row['gflops']:.1f} | {_f(row.get('mfu') and 100 * row['mfu'], '.1f')}% "
          f"| {_f(row.get('compile_s'), '.2f')} | {_f(row['first_call_s'], '.2f')} "
          f"| {_f(row['xla_peak_mb'], ',.0f')} | {_f(row['rss_delta_mb'], ',.0f')} |"
        )
  lines += [
    "",
    "How to read: median, IQR and min–max pool every timed iteration over all rounds. bert_jax speed-up = "
    "the peer's median time / bert_jax's (above 1: bert_jax is faster); in brackets the lowest and highest "
    "per-round ratio. MFU = model FLOPs (matmuls and attention only; train = 3 x forward, with the MLM "
    "head at the positions each peer computes logits for) per second / the matmul ceiling above. "
    "compile s: JAX peers trace + lower + XLA compile of the step (timed apart from running it); "
    "torch_compile the first call minus a median step; torch_eager has none. first call s: the first call "
    "after building (for torch_compile it includes compiling). XLA peak MB: arguments + outputs - donated "
    "+ temporaries of the compiled step (XLA's plan; on CPU it misses the buffers of library kernels XLA "
    "calls, such as YNNPACK's: RSS +MB sees them). RSS +MB: growth of the worker's resident-set "
    "high-water mark over building the case and its first calls (a process-wide mark: a case smaller than "
    "an earlier one can show 0).",
    "",
    "![throughput](throughput.png)",
    "",
  ]
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  summary = results.get("summary") or summarize(results)
  modes = [m for m in cases_lib.MODES if any(e["mode"] == m for e in results["cases"].values())]
  peers = list(results["meta"]["peers"]) or sorted({p for e in results["cases"].values() for p in e["peers"]})
  fig, axes = plt.subplots(
    len(modes), 1, figsize=(max(6, 2.2 * len(results["cases"]) + 3), 4 * len(modes)), squeeze=False
  )
  for ax, mode in zip(axes[:, 0], modes):
    ids = [cid for cid, e in results["cases"].items() if e["mode"] == mode]
    width = 0.8 / max(len(peers), 1)
    values = []
    for j, peer in enumerate(peers):
      xs, ys, low, high = [], [], [], []
      for i, cid in enumerate(ids):
        row = summary["cases"][cid].get(peer, {})
        if "tokens_per_s" not in row:
          continue
        xs.append(i + (j - (len(peers) - 1) / 2) * width)
        ys.append(row["tokens_per_s"])
        low.append(row["tokens_per_s"] - row["tokens_per_s_p25_p75"][0])
        high.append(row["tokens_per_s_p25_p75"][1] - row["tokens_per_s"])
      if xs:
        ax.bar(xs, ys, width, yerr=[low, high], capsize=2, label=peer)
        values += ys
    ax.set_xticks(range(len(ids)))
    ax.set_xticklabels([cid.split("/", 1)[1] for cid in ids])
    ax.set_ylabel("tokens / s (median, IQR bars)")
    ax.set_title(f"{mode} ({results['meta']['settings']['dtype']}), higher is better")
    if values and max(values) / max(min(values), 1e-9) > 30:
      ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
  fig.suptitle(
    f"bert_jax and peers, {results['meta']['machine']['cpu']}, {results['meta']['date_utc']}",
    fontsize="medium",
  )
  fig.tight_layout()
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=110)
  plt.close(fig)


def write(results: dict, out: str) -> None:
  results["summary"] = summarize(results)
  files.write_json(os.path.join(out, "results.json"), results)
  files.write_text(os.path.join(out, "results.md"), markdown(results))
  plot(results, os.path.join(out, "throughput.png"))


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    raise SystemExit("usage: python experiments/benchmarks/report.py OUT_DIR (a folder bench.py wrote)")
  path = os.path.join(argv[0], "results.json")
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  except FileNotFoundError:
    raise SystemExit(f"{path}: not found (expected the results.json bench.py writes in --out)") from None
  write(results, argv[0])
  print(markdown(results))


if __name__ == "__main__":
  main()
