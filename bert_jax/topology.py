"""Accelerators by name: the chip table (HBM, peak FLOP/s, bandwidth) and TPU slices that are not attached.

One table for every place that needs a chip's numbers (the runner's MFU, the compile-only report, the sizing
guide). TPU rows are Google's Cloud TPU pages ("Key specifications" of each generation, read 2026-12):
cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e. GPU rows are NVIDIA's data sheets (dense bf16 Tensor Core
peak, without sparsity): H100 SXM and H200 SXM. "GB" on those pages is taken as GiB: the HBM a program can
use is a little less (the runtime keeps some), so a report within a few percent of the limit is marked tight.

A TPU slice is named as Cloud TPU names it (`v4-32`, `v5litepod-16`, `v5p-128`, `v6e-8`: the number counts
TensorCores for v4 and v5p, two to a chip, and chips for v5e and v6e) or in JAX's form (`v5p:4x4x4`).
`devices(slice)` gives compile-only devices from `libtpu`: a Mesh over them and `jit(...).lower(...).compile()`
run the real TPU compiler on a machine with no TPU (bert_jax/aot.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

GIB = 1024**3

# The libtpu that jax's `tpu` extra pins for the jax in requirements.txt.
LIBTPU_INSTALL = 'pip install "jax[tpu]==0.10.2"  (libtpu 0.0.42.*)'


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  device_kinds: tuple[str, ...]  # jax Device.device_kind prefixes
  hbm_bytes: float
  peak_bf16_flops: float  # dense, per chip
  hbm_bandwidth: float  # bytes/s
  source: str


CHIPS = {
  "v4": Chip("TPU v4", ("TPU v4",), 32 * GIB, 275e12, 1200e9, "cloud.google.com/tpu/docs/v4"),
  "v5e": Chip("TPU v5e", ("TPU v5 lite", "TPU v5e"), 16 * GIB, 197e12, 819e9, "cloud.google.com/tpu/docs/v5e"),
  # device_kind "TPU v5" is v5p ("TPU v5 lite" is matched first).
  "v5p": Chip("TPU v5p", ("TPU v5p", "TPU v5"), 95 * GIB, 459e12, 2765e9, "cloud.google.com/tpu/docs/v5p"),
  "v6e": Chip("TPU v6e", ("TPU v6 lite", "TPU v6e"), 32 * GIB, 918e12, 1640e9, "cloud.google.com/tpu/docs/v6e"),
  "h100": Chip("NVIDIA H100", ("NVIDIA H100",), 80 * GIB, 989e12, 3350e9, "NVIDIA H100 SXM data sheet"),
  "h200": Chip("NVIDIA H200", ("NVIDIA H200",), 141 * GIB, 989e12, 4800e9, "NVIDIA H200 SXM data sheet"),
  "a100": Chip("NVIDIA A100", ("NVIDIA A100",), 80 * GIB, 312e12, 2039e9, "NVIDIA A100 80GB SXM data sheet"),
}
TPU_GENERATIONS = ("v4", "v5e", "v5p", "v6e")


def chip_for_device_kind(kind: str) -> Chip | None:
  """The table's row for a jax device_kind ("TPU v5 lite", "NVIDIA H100 80GB HBM3"), or None."""
  matches = [(len(p), c) for c in CHIPS.values() for p in c.device_kinds if kind.startswith(p)]
  return max(matches, key=lambda m: m[0])[1] if matches else None


# Cloud TPU slice shapes by chip count (the generations' "supported configurations" tables).
_SHAPES_3D = {
  4: "2x2x1",
  8: "2x2x2",
  16: "2x2x4",
  32: "2x4x4",
  64: "4x4x4",
  128: "4x4x8",
  256: "4x8x8",
  512: "8x8x8",
  1024: "8x8x16",
  2048: "8x16x16",
  4096: "16x16x16",
}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
# Accelerator-type prefix -> (generation, TensorCores counted per chip in the name).
_CLOUD_NAMES = {"v4": ("v4", 2), "v5p": ("v5p", 2), "v5litepod": ("v5e", 1), "v5e": ("v5e", 1), "v6e": ("v6e", 1)}
_CLOUD = re.compile(r"^(v4|v5p|v5litepod|v5e|v6e)-(\d+)$")
_JAX = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})$")


class TopologyError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU slice (or `slices` identical ones joined by the data-center network)."""

  name: str  # as the user gave it
  generation: str  # key of CHIPS
  shape: str  # JAX's chip grid, "4x4x4"
  slices: int = 1

  @property
  def chip(self) -> Chip:
    return CHIPS[self.generation]

  @property
  def chips_per_slice(self) -> int:
    return math.prod(int(n) for n in self.shape.split("x"))

  @property
  def chips(self) -> int:
    return self.chips_per_slice * self.slices

  @property
  def jax_name(self) -> str:
    return f"{self.generation}:{self.shape}"

  @property
  def label(self) -> str:
    """File-name-safe name of the whole target: "v5p-128", "v5p_4x4x4", "v4-32x2"."""
    base = self.name.replace(":", "_")
    return base if self.slices == 1 else f"{base}x{self.slices}"

  def topology_kwargs(self) -> dict:
    kwargs: dict = {}
    if self.generation == "v4":
      kwargs["chip_config_name"] = "megacore"  # one device per chip, both TensorCores, as a v4 pod runs
    if self.generation in ("v5e", "v6e") and self.chips_per_slice <= 8:
      # 1-, 4- and 8-chip v5e/v6e slices are one host; libtpu's default host is 2x2 chips.
      rows, cols = (int(n) for n in self.shape.split("x"))
      kwargs["chips_per_host_bounds"] = (rows, cols, 1)
    if self.slices > 1:
      kwargs["num_slices"] = self.slices
    return kwargs


def known_names() -> list[str]:
  names = [f"v4-{2 * c}" for c in _SHAPES_3D if c <= 2048] + [f"v5p-{2 * c}" for c in _SHAPES_3D]
  names += [f"v5litepod-{c}" for c in _SHAPES_2D] + [f"v6e-{c}" for c in _SHAPES_2D]
  return names


def parse(name: str, slices: int = 1) -> Slice:
  """`v5p-128`, `v5litepod-16`, `v4-32`, `v6e-8`, or JAX's `v5p:4x4x4`; `slices` identical slices."""
  if slices < 1:
    raise TopologyError(f"--slices={slices}; expected 1 or more")
  text = name.strip().lower()
  m = _CLOUD.match(text)
  if m:
    generation, per_chip = _CLOUD_NAMES[m.group(1)]
    count = int(m.group(2))
    table = _SHAPES_2D if generation in ("v5e", "v6e") else _SHAPES_3D
    chips = count // per_chip
    if count % per_chip or chips not in table:
      sizes = sorted(per_chip * c for c in table)
      raise TopologyError(
        f"unknown TPU slice {name!r}: {m.group(1)} comes in sizes {sizes}"
        + (" (TensorCores, two per chip)" if per_chip == 2 else " (chips)")
      )
    return Slice(name, generation, table[chips], slices)
  m = _JAX.match(text)
  if m:
    dims = m.group(2).split("x")
    if len(dims) != (2 if m.group(1) in ("v5e", "v6e") else 3):
      raise TopologyError(
        f"TPU topology {name!r}: {m.group(1)} is a {'2D' if m.group(1) in ('v5e', 'v6e') else '3D'} grid of chips"
      )
    return Slice(name, m.group(1), m.group(2), slices)
  raise TopologyError(
    f"unknown TPU topology {name!r}; give a Cloud TPU accelerator type ({', '.join(known_names()[:4])}, ..., "
    f"all: {' '.join(known_names())}) or JAX's form GENERATION:SHAPE such as v5p:4x4x4 or v5e:2x2 "
    f"(generations {list(TPU_GENERATIONS)})"
  )


def devices(target: Slice) -> list:
  """Compile-only devices of the slice(s), from libtpu; no TPU needs to be attached."""
  try:
    import libtpu  # noqa: F401
  except ImportError:
    raise TopologyError(f"compiling for a TPU needs libtpu, which is not installed: {LIBTPU_INSTALL}") from None
  import jax
  from jax.experimental import topologies

  if jax.default_backend() != "tpu":
    # libtpu lets one process at a time hold a machine's TPU (a lock file in /tmp). With no TPU attached there is
    # nothing to guard, and a second compile-only process (a test worker, a sweep) must not be refused.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    return list(
      topologies.get_topology_desc(
        platform="tpu", topology_name=target.jax_name, **target.topology_kwargs()
      ).devices
    )
  except Exception as e:  # libtpu's own message says which part of the name it refused
    raise TopologyError(f"libtpu cannot describe TPU topology {target.jax_name!r}: {e}") from None
