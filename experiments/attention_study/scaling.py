"""Time and peak memory of one encoder layer against sequence length, per attention variant and kernel.

    python experiments/attention_study/scaling.py --out DIR [--lengths 128,256,...,8192]
        [--mode forward|train] [--repeats 5] [--memory xla|rss]

One bert_jax EncoderBlock (hidden 256, 4 heads of 64, MLP 1024, float32, batch 1) per variant. Time is the
median of `--repeats` calls after a warm-up call, interleaved across variants at each length so that a
noisy machine slows all of them alike. Peak memory (`--memory`): `xla` is XLA's own accounting of the compiled
call, arguments + outputs + temporaries (`Compiled.memory_analysis()`): independent of the allocator and of
other processes, but blind to the buffers that library kernels XLA calls allocate for themselves (XLA's CPU
backend runs a fused attention as one YNNPACK kernel whose score matrix it does not see); `rss` runs each
variant and length once more in a fresh process and records how far the process's resident set rose above
its level before the first call (Linux): what the call really took from the machine. `train` times the
forward and backward pass (gradients of the sum of outputs with respect to the layer's parameters and input).

Writes DIR/scaling.json, a list of {"attention", "seq_len", "ms", "peak_bytes", "status", "mode"} records (the
format `python -m bert_jax.sweeps report --scaling` reads), DIR/scaling.meta.json (command, machine, date,
layer), and from them DIR/scaling.md (the table) and DIR/scaling.png (log-log time and memory against
length). A variant whose compiled call would need more memory than `--max-gib` is recorded as skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bert_jax import files, sweeps  # noqa: E402
from bert_jax.models import BertConfig, attention  # noqa: E402
from bert_jax.models.layers import EncoderBlock  # noqa: E402

LAYER = BertConfig(
  vocab_size=8,
  hidden_size=256,
  num_layers=1,
  num_heads=4,
  mlp_dim=1024,
  max_position_embeddings=8,
  dropout_rate=0.0,
  attention_dropout_rate=0.0,
)
# name -> config changes. dense/xla is the reference; chunked computes the same numbers block by block.
VARIANTS = {
  "dense": dict(attention="dense", attention_kernel="xla"),
  "chunked": dict(attention="dense", attention_kernel="chunked", attention_block_size=512),
  "local": dict(
    attention="local", attention_kernel="chunked", attention_window=128, attention_block_size=128
  ),
  "linear": dict(attention="linear"),
}


def layer_call(config: BertConfig, length: int, mode: str):
  block = EncoderBlock(config, 0)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, length, config.hidden_size)), jnp.float32)
  tokens = attention.tokens(jnp.ones((1, length), jnp.int32))
  params = jax.jit(block.init)(jax.random.key(0), x[:, :8], attention.tokens(jnp.ones((1, 8), jnp.int32)))

  def forward(params, x):
    return block.apply(params, x, tokens)

  if mode == "forward":
    fn = forward
  else:
    fn = jax.grad(lambda p, x: jnp.sum(forward(p, x)), argnums=(0, 1))
  compiled = jax.jit(fn).lower(params, x).compile()
  memory = compiled.memory_analysis()
  peak = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
  return (lambda: jax.block_until_ready(compiled(params, x))), peak


def rss_growth(name: str, length: int, mode: str) -> int:
  """Bytes the resident set rises over the first call of one variant at one length, in a fresh process."""
  probe = [
    sys.executable,
    os.path.abspath(__file__),
    "--out",
    os.devnull,
    "--probe",
    f"{name}:{length}:{mode}",
  ]
  done = subprocess.run(probe, capture_output=True, text=True)
  if done.returncode != 0:
    raise RuntimeError(f"memory probe {name} at {length} ({mode}) failed: {done.stderr.strip()[-500:]}")
  return int(done.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def _probe(spec: str) -> None:
  """Print the peak resident-set growth over one call: the kernel's high-water mark (VmHWM) is reset to the
  current resident set (writing 5 to /proc/self/clear_refs, Linux) after compiling, so compilation's own peak
  does not hide the call's."""
  name, length, mode = spec.split(":")
  call, _ = layer_call(LAYER.replace(**VARIANTS[name]), int(length), mode)
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError as e:
    raise SystemExit(f"--memory rss needs Linux's /proc/self/clear_refs to reset the peak resident set: {e}")
  before = _status_kib("VmRSS")
  call()
  print(1024 * (_status_kib("VmHWM") - before))


def measure(lengths, names, mode, repeats, max_bytes, memory="xla"):
  records = []
  for length in lengths:
    calls = {}
    for name in names:
      config = LAYER.replace(**VARIANTS[name])
      try:
        call, peak = layer_call(config, length, mode)
      except Exception as e:  # a variant that cannot compile at this length is a result, not a crash
        records.append(
          dict(attention=name, seq_len=length, ms=None, peak_bytes=None, status=f"error: {e}"[:200])
        )
        continue
      if peak > max_bytes:
        records.append(
          dict(
            attention=name,
            seq_len=length,
            ms=None,
            peak_bytes=peak,
            status=f"skipped: needs {peak / 2**30:.1f} GiB",
          )
        )
        continue
      call()  # warm-up
      calls[name] = (call, peak, [])
    for _ in range(repeats):  # interleaved: each round runs every variant once
      for name, (call, _, times) in calls.items():
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    for name, (call, peak, times) in calls.items():
      ms = 1e3 * float(np.median(times))
      if memory == "rss":
        peak = rss_growth(name, length, mode)
      records.append(dict(attention=name, seq_len=length, ms=ms, peak_bytes=int(peak), status="ok"))
      print(f"{mode} L={length:5d} {name:8s} {ms:10.2f} ms  {peak / 2**20:9.1f} MiB", flush=True)
  for r in records:
    r["mode"] = mode
  return records


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="folder for scaling.json, .meta.json, .md and .png")
  parser.add_argument("--lengths", default="128,256,512,1024,2048,4096,8192")
  parser.add_argument(
    "--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}"
  )
  parser.add_argument("--mode", choices=("forward", "train"), default="forward")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--max-gib", type=float, default=8.0, help="skip calls XLA says need more memory than this"
  )
  parser.add_argument(
    "--memory",
    choices=("xla", "rss"),
    default="xla",
    help="peak memory as XLA accounts it, or as the process's resident set grows (one fresh process each)",
  )
  parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: NAME:LENGTH:MODE, for --memory rss
  args = parser.parse_args(argv)
  if args.probe:
    return _probe(args.probe)
  names = [n for n in args.variants.split(",") if n]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
  try:
    lengths = [int(n) for n in args.lengths.split(",") if n]
  except ValueError:
    parser.error(f"--lengths={args.lengths!r}: expected comma-separated integers")
  records = measure(lengths, names, args.mode, args.repeats, args.max_gib * 2**30, args.memory)
  files.write_json(os.path.join(args.out, "scaling.json"), records)
  meta = dict(
    command=" ".join(["python", "experiments/attention_study/scaling.py"] + (argv or sys.argv[1:])),
    machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {jax.default_backend()}",
    jax=jax.__version__,
    date=time.strftime("%Y-%m-%d"),
    layer=dict(hidden=LAYER.hidden_size, heads=LAYER.num_heads, mlp=LAYER.mlp_dim, batch=1, dtype="float32"),
    memory=args.memory,
    variants={n: VARIANTS[n] for n in names},
  )
  files.write_json(os.path.join(args.out, "scaling.meta.json"), meta)
  sweeps.write_scaling(
    records,
    args.out,
    source=f"{meta['command']} ({meta['machine']}, {meta['date']}, {args.mode}; memory: {args.memory})",
  )
  print(f"wrote {args.out}/scaling.json, scaling.md, scaling.png")


if __name__ == "__main__":
  main()
