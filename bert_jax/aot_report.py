"""Reading a compiled step and writing the compile-only report (bert_jax/aot.py compiles): XLA's memory and cost
analyses per chip, the roofline, the collectives in the HLO, the TPU compiler's out-of-memory refusals, advice for
a step that does not fit, and the Markdown page."""

from __future__ import annotations

import math
import re
from importlib import metadata
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from bert_jax import topology

if TYPE_CHECKING:
  from bert_jax.aot import Program

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# A step using more than this share of the chip's HBM is reported as tight: the runtime keeps some HBM.
TIGHT = 0.95
REMAT_WARNING = "Involuntary full rematerialization"
_MOSAIC = "tpu_custom_call"


_SHAPE = re.compile(r"\b(pred|s4|s8|s16|s32|s64|u4|u8|u16|u32|u64|f8e\w+|bf16|f16|f32|f64|c64|c128)\[([\d,]*)\]")
_BITS = {"pred": 8, "c64": 64, "c128": 128}
_INSTRUCTION = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")


def _array_bytes(dtype: str, dims: str) -> int:
  bits = _BITS.get(dtype) or int(re.sub(r"\D", "", dtype.split("e")[0]) or 8)
  count = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
  return count * bits // 8


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {count, bytes}} of the collectives in a compiled program's HLO; bytes: each one's result (an
  async start's result tuple holds its operand too: its largest array is counted)."""
  found: dict[str, dict[str, int]] = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.search(line)
    if not m:
      continue
    sizes = [_array_bytes(t, d) for t, d in _SHAPE.findall(m.group(1))]
    size = max(sizes, default=0) if m.group(3) else sum(sizes)
    entry = found.setdefault(m.group(2), {"count": 0, "bytes": 0})
    entry["count"] += 1
    entry["bytes"] += size
  return found


def _per_chip_bytes(tree) -> int:
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# libtpu's words when a program does not fit: "the total memory required for HLO temporaries (50.36G) exceeds
# available HBM (15.75G)", or "Used 20.5G of 15.48G hbm".
_REQUIRED = re.compile(r"required for ([\w ]+?) \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)")
_USED = re.compile(r"Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm")


def refused_memory(message: str) -> dict:
  """What the compiler's out-of-memory message says: the bytes it needed (and for what) and the HBM it had."""
  m = _REQUIRED.search(message)
  if m:
    return {
      "what": m.group(1),
      "required": float(m.group(2)) * _UNITS[m.group(3)],
      "available": float(m.group(4)) * _UNITS[m.group(5)],
    }
  m = _USED.search(message)
  if m:
    return {"what": "the program", "required": float(m.group(1)) * _UNITS[m.group(2)], "available": float(m.group(3)) * _UNITS[m.group(4)]}
  return {}


def _refused_result(program: Program, chip: topology.Chip, extra: dict) -> dict:
  """A step the compiler refused for want of HBM: the arguments' own sizes and what the compiler said."""
  said = refused_memory(extra["refused"])
  by_part = {k: _per_chip_bytes(v) for k, v in program.parts.items()}
  arguments = sum(by_part.values())
  temporaries = int(said["required"]) if said.get("what") == "HLO temporaries" else 0
  total = arguments + temporaries if temporaries else int(said.get("required", arguments))
  return {
    "name": program.name,
    "notes": program.notes,
    "hbm": {
      "arguments": arguments,
      "arguments_by_part": by_part,
      "temporaries": temporaries,
      "outputs_not_aliased": 0,
      "generated_code": 0,
      "total": total,
      "chip": int(chip.hbm_bytes),
      "available": said.get("available"),
      "fraction": total / chip.hbm_bytes,
      "fits": False,
    },
    "compiler_refused": extra["refused"],
    "cost": None,
    "roofline": None,
    "collectives": {},
    "mosaic_kernels": 0,
    "involuntary_rematerialization": extra["log"].count(REMAT_WARNING),
    "compile_seconds": extra["compile_seconds"],
  }


def analyse(program: Program, compiled, chip: topology.Chip, chips: int, extra: dict) -> dict:
  if compiled is None:
    return _refused_result(program, chip, extra)
  memory = compiled.memory_analysis()
  arguments = int(memory.argument_size_in_bytes)
  outputs = int(memory.output_size_in_bytes) - int(memory.alias_size_in_bytes)  # donated state reuses its input
  temporaries = int(memory.temp_size_in_bytes)
  code = int(memory.generated_code_size_in_bytes)
  total = arguments + outputs + temporaries + code
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))
  bytes_accessed = float(cost.get("bytes accessed", 0.0))
  model_flops_chip = program.model_flops / chips
  notes = list(program.notes)
  if program.scanned:
    # XLA's cost analysis counts a while loop's body once: a scanned encoder's FLOPs and bytes come out as one
    # layer's (a 4-layer model: 1.35 GFLOP scanned, 5.24 unscanned, 5.23 by the formula). The compute term
    # then takes the model's FLOPs; the memory term stays a lower bound.
    flops = max(flops, model_flops_chip)
    notes.append(
      "scanned layers: XLA counts the scan's body once, so FLOPs are the model's and bytes (the memory term) a "
      "lower bound; compile with scan_layers=False for XLA's full count"
    )
  compute_s, memory_s = flops / chip.peak_bf16_flops, bytes_accessed / chip.hbm_bandwidth
  roofline = max(compute_s, memory_s)
  text = compiled.as_text()
  return {
    "name": program.name,
    "notes": notes,
    "hbm": {
      "arguments": arguments,
      "arguments_by_part": {k: _per_chip_bytes(v) for k, v in program.parts.items()},
      "temporaries": temporaries,
      "outputs_not_aliased": outputs,
      "generated_code": code,
      "total": total,
      "chip": int(chip.hbm_bytes),
      "fraction": total / chip.hbm_bytes,
      "fits": total <= chip.hbm_bytes,
    },
    "cost": {"flops": flops, "bytes_accessed": bytes_accessed, "transcendentals": float(cost.get("transcendentals", 0))},
    "roofline": {
      "seconds": roofline,
      "bound": "compute" if compute_s >= memory_s else "memory",
      "compute_seconds": compute_s,
      "memory_seconds": memory_s,
      "tokens_per_second": program.tokens / roofline if roofline else None,
      "model_flops_per_chip": model_flops_chip,
      "mfu_ceiling": model_flops_chip / (chip.peak_bf16_flops * roofline) if model_flops_chip and roofline else None,
    },
    "collectives": collectives(text),
    "mosaic_kernels": text.count(_MOSAIC),
    "involuntary_rematerialization": extra["log"].count(REMAT_WARNING),
    "compile_seconds": extra["compile_seconds"],
  }


def advice(config, result: dict) -> list[str]:
  """What to change, in the order a user would try it, when a step does not fit."""
  hbm = result["hbm"]
  over = hbm["total"] / hbm["chip"]
  tips = []
  parts = hbm["arguments_by_part"]
  state = parts.get("params", 0) + parts.get("optimizer state", 0)
  if hbm["temporaries"] >= state:
    factor = 2 ** math.ceil(math.log2(max(over, 1.0) * 1.25))
    tips.append(
      f"activations dominate ({_gib(hbm['temporaries'])} of temporaries): raise optimizer.accumulation_steps "
      f"(x{factor}: the same global batch in {factor} microbatches) or lower the batch size"
    )
    if "remat" in config.model and config.model.remat == "none":
      tips.append("recompute activations in the backward pass: --config.model.remat=full (or dots)")
  if "mesh" in config and (state >= hbm["temporaries"] or config.mesh.strategy in ("dp", "tp")):
    if config.mesh.strategy in ("dp", "tp"):
      tips.append(
        f"shard parameters and optimizer state ({_gib(state)} per chip now): --config.mesh.strategy="
        f"{'fsdp' if config.mesh.strategy == 'dp' else 'fsdp_tp'} with --config.mesh.fsdp=-1"
      )
    else:
      tips.append("spread the state over more chips: a larger fsdp axis, or a bigger slice")
  if "model" in config and config.model.get("dtype", "float32") == "float32":
    tips.append("compute in bfloat16: --config.model.dtype=bfloat16 (parameters stay float32)")
  return tips


def _gib(n: float) -> str:
  return f"{n / topology.GIB:.2f} GiB"


def versions() -> dict[str, str]:
  out = {}
  for name in ("jax", "jaxlib", "libtpu", "flax"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def markdown(report: dict) -> str:
  t = report["target"]
  lines = [
    f"# Compile-only report: {report['job']} on {t['name']} ({t['chips']} chips of {t['chip']}, "
    f"{t['hosts']} hosts{', ' + str(t['slices']) + ' slices' if t['slices'] > 1 else ''})",
    "",
    f"Mesh {report['mesh']} ({report['strategy']}); jax {report['versions']['jax']}, libtpu "
    f"{report['versions']['libtpu']}. Per chip; HBM {_gib(t['hbm_bytes'])}, peak bf16 "
    f"{t['peak_bf16_flops'] / 1e12:.0f} TFLOP/s, HBM bandwidth {t['hbm_bandwidth'] / 1e9:.0f} GB/s ({t['source']}).",
    "",
    "| step | params | opt state | batch | temporaries | total | of HBM | fits | TFLOP | GB accessed | roofline | "
    "bound | MFU ceiling | compile |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for p in report["programs"]:
    h, r, parts = p["hbm"], p["roofline"], p["hbm"]["arguments_by_part"]
    if r is None:  # the compiler refused it
      lines.append(
        f"| {p['name']} | {_gib(parts.get('params', 0))} | {_gib(parts.get('optimizer state', 0))} | "
        f"{_gib(parts.get('batch', 0))} | {_gib(h['temporaries']) if h['temporaries'] else '-'} | "
        f"{_gib(h['total'])} | {100 * h['fraction']:.0f}% | **no** (compiler) | - | - | - | - | - | "
        f"{p['compile_seconds']:.0f} s |"
      )
      continue
    mfu = f"{100 * r['mfu_ceiling']:.0f}%" if r["mfu_ceiling"] else "-"
    lines.append(
      f"| {p['name']} | {_gib(parts.get('params', 0))} | {_gib(parts.get('optimizer state', 0))} | "
      f"{_gib(parts.get('batch', 0))} | {_gib(h['temporaries'])} | {_gib(h['total'])} | {100 * h['fraction']:.0f}% | "
      f"{'yes' if h['fits'] else '**no**'}{' (tight)' if h['fits'] and h['fraction'] > TIGHT else ''} | "
      f"{p['cost']['flops'] / 1e12:.2f} | {p['cost']['bytes_accessed'] / 1e9:.1f} | {1e3 * r['seconds']:.1f} ms | "
      f"{r['bound']} | {mfu} | {p['compile_seconds']:.0f} s |"
    )
  lines += ["", "Collectives per step (count, result bytes per chip):", ""]
  for p in report["programs"]:
    if p.get("compiler_refused"):
      continue
    parts = [f"{k} {v['count']} ({v['bytes'] / 2**20:.1f} MiB)" for k, v in sorted(p["collectives"].items())]
    extra = []
    if p["mosaic_kernels"]:
      extra.append(f"{p['mosaic_kernels']} Mosaic kernel calls")
    if p["involuntary_rematerialization"]:
      extra.append(f"**{p['involuntary_rematerialization']} involuntary full rematerializations**")
    lines.append(f"- {p['name']}: " + (", ".join(parts) or "none") + ("; " + "; ".join(extra) if extra else ""))
  for p in report["programs"]:
    if p.get("compiler_refused"):
      lines += ["", f"The TPU compiler refused {p['name']}: {p['compiler_refused']}"]
  notes = sorted({n for p in report["programs"] for n in p["notes"]})
  if notes:
    lines += ["", "Assumed: " + "; ".join(notes) + "."]
  if report["advice"]:
    lines += ["", "**Does not fit.** To try:", ""] + [f"- {a}" for a in report["advice"]]
  lines += [
    "",
    "Total = arguments + temporaries + outputs not aliased to arguments + code (XLA's memory analysis). Roofline = "
    "max(FLOPs / peak, bytes / bandwidth) from XLA's cost analysis: a lower bound on step time; MFU ceiling = "
    "model FLOPs (6 x matmul parameters per token + attention) / (peak x roofline).",
  ]
  return "\n".join(lines) + "\n"
