"""Side-by-side benchmark of bert_jax and its peers: forward and MLM train step, interleaved rounds.

    python experiments/benchmarks/bench.py --cases base:8x128,base:2x512,minilm:32x128 --out runs/bench

Each peer is a long-lived worker process in its own environment (bert_jax, torch_eager, torch_compile
in the main .venv; hf_flax in .venv-peers, made by setup_peers.sh) that builds every case once and then
answers "run K iterations of case X" over a pipe. Round r runs every case on every peer (peer order
rotating from round to round), so slow phases of the machine hit all peers alike; only one worker
computes at a time. The bert_jax worker also times XLA matmuls at the start of each round: the ceiling
that MFU is measured against. See README.md for what each number means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)  # configs/ (the model variants table)

import cases as cases_lib  # noqa: E402
import report  # noqa: E402

PEERS = ("bert_jax", "hf_flax", "torch_eager", "torch_compile", "bert_jax_scan")
_SCRIPTS = {
  "bert_jax": "peer_bert_jax.py",
  "bert_jax_scan": "peer_bert_jax.py",  # the same worker, encoder layers under nn.scan (scan_layers=True)
  "hf_flax": "peer_hf_flax.py",
  "torch_eager": "peer_torch.py",
  "torch_compile": "peer_torch.py",
}
_JAX_PEERS = ("bert_jax", "hf_flax", "bert_jax_scan")


class WorkerError(RuntimeError):
  pass


class Worker:
  """One peer's process; `request` sends a JSON line and waits for the JSON answer."""

  def __init__(self, peer: str, python: str, env: dict, log_path: str):
    self.peer, self.log_path, self.dead = peer, log_path, None
    self._log = open(log_path, "w", encoding="utf-8")
    self.proc = subprocess.Popen(
      [python, "-u", os.path.join(HERE, _SCRIPTS[peer]), peer],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      stderr=self._log,
      text=True,
      bufsize=1,
      cwd=ROOT,
      env=env,
    )

  def request(self, op: str, **fields) -> dict:
    if self.dead:
      raise WorkerError(self.dead)
    try:
      self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
      self.proc.stdin.flush()
      line = self.proc.stdout.readline()
    except (BrokenPipeError, OSError):
      line = ""
    if not line:
      code = self.proc.wait(timeout=30)
      self.dead = f"{self.peer} worker exited with code {code} during {op!r}; see its log {self.log_path}"
      raise WorkerError(self.dead)
    answer = json.loads(line)
    if not answer.get("ok"):
      raise WorkerError(f"{self.peer} {op}: {answer.get('error')}\n{answer.get('traceback', '')}")
    answer.pop("ok")
    return answer

  def close(self):
    if self.proc.poll() is None:
      try:
        self.request("close")
        self.proc.wait(timeout=30)
      except (WorkerError, subprocess.TimeoutExpired):
        self.proc.kill()
        self.proc.wait()
    self._log.close()


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument(
    "--cases",
    required=True,
    help="comma-separated VARIANT:BATCHxLENGTH[:MODE]; VARIANT: tiny|mini|small|medium|base|large|minilm "
    "or L-6_H-384_A-12[_I-1536]; e.g. base:8x128,base:2x512,minilm:32x128",
  )
  p.add_argument("--modes", default="forward,train", help="modes for items without their own (forward,train)")
  p.add_argument("--peers", default=",".join(PEERS[:4]), help=f"comma-separated subset of {','.join(PEERS)}")
  p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (every case on every peer)")
  p.add_argument("--iters", type=int, default=3, help="timed iterations per case, peer and round")
  p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first (compiling) call")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
  p.add_argument(
    "--mlm-positions",
    default="masked",
    choices=("masked", "all"),
    help="bert_jax's MLM logits: at the masked positions only (BERT's pretraining) or at every position "
    "(what the HuggingFace models compute)",
  )
  p.add_argument(
    "--attention-kernel",
    default="xla",
    help="bert_jax's attention kernel (config.model.attention_kernel: xla, chunked, dot_product, pallas); "
    "dot_product uses cuDNN on a GPU in bfloat16",
  )
  p.add_argument(
    "--order",
    default="interleaved",
    choices=("interleaved", "case-major"),
    help="interleaved: each round runs all cases (all cases live at once); case-major: all rounds of one "
    "case, then the next (one case in memory at a time: for large models)",
  )
  p.add_argument(
    "--malloc",
    default="own",
    choices=("own", "kept"),
    help="own: each peer as it ships (bert_jax keeps freed memory for reuse, bert_jax/hostmem.py; the others "
    "use glibc's defaults); kept: every peer runs with those settings (as environment variables), to see "
    "what is the allocator and what the framework",
  )
  p.add_argument(
    "--ceiling-iters", type=int, default=5, help="timed calls per matmul shape per round; 0: skip"
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--python", default=sys.executable, help="interpreter of bert_jax and the torch peers")
  p.add_argument(
    "--peers-python",
    default=os.path.join(ROOT, ".venv-peers", "bin", "python"),
    help="interpreter of the hf_flax peer (made by setup_peers.sh)",
  )
  p.add_argument(
    "--jax-platforms",
    default=os.environ.get("JAX_PLATFORMS") or "cpu",
    help="JAX_PLATFORMS of the JAX workers (default: the environment's, else cpu)",
  )
  p.add_argument(
    "--out", required=True, help="output folder: results.json, results.md, throughput.png, logs/"
  )
  args = p.parse_args(argv)
  args.peers = [s.strip() for s in args.peers.split(",") if s.strip()]
  unknown = [s for s in args.peers if s not in PEERS]
  if unknown or not args.peers:
    p.error(f"--peers: unknown {unknown}; choose from {list(PEERS)}")
  args.modes = [s.strip() for s in args.modes.split(",") if s.strip()]
  bad_modes = [m for m in args.modes if m not in cases_lib.MODES]
  if bad_modes or not args.modes:
    p.error(f"--modes: unknown {bad_modes}; choose from {list(cases_lib.MODES)}")
  for name in ("rounds", "iters"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
  if args.warmup < 0 or args.ceiling_iters < 0:
    p.error("--warmup and --ceiling-iters must be non-negative")
  return args


def machine_info() -> dict:
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
  except OSError:
    pass
  memory_gb = None
  try:
    memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (ValueError, OSError):
    pass
  try:
    affinity = len(os.sched_getaffinity(0))
  except AttributeError:
    affinity = None
  return {
    "cpu": cpu,
    "cores": os.cpu_count(),
    "cores_usable": affinity,
    "memory_gb": memory_gb,
    "platform": platform.platform(),
    "load_average_at_start": list(os.getloadavg()),
  }


# bert_jax/hostmem.py's mallopt settings, as glibc reads them from the environment.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def worker_env(peer: str, args, inductor_cache: str) -> dict:
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile times are of a cold compile
  if peer in _JAX_PEERS:
    env["JAX_PLATFORMS"] = args.jax_platforms
  else:
    env["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache  # fresh: torch.compile's first call compiles cold
  env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH", "")) if p)
  if args.malloc == "kept":  # every peer with what bert_jax sets for itself (bert_jax/hostmem.py)
    env.update(MALLOC_ENV)
  return env


def log(message: str):
  print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def case_request(case: cases_lib.Case, args) -> dict:
  return {
    "id": case.id,
    "mode": case.mode,
    "sizes": case.sizes,
    "batch": case.batch,
    "length": case.length,
    "predictions": cases_lib.num_predictions(case.length),
    "vocab_size": cases_lib.VOCAB_SIZE,
    "max_positions": cases_lib.MAX_POSITIONS,
    "dtype": args.dtype,
    "seed": args.seed,
    "warmup": args.warmup,
    "mlm_positions": args.mlm_positions,
    "attention_kernel": args.attention_kernel,
  }


class Bench:
  def __init__(self, args, cases, workers, results):
    self.args, self.cases, self.workers, self.results = args, cases, workers, results
    self.shapes = cases_lib.ceiling_shapes(cases, accelerator=args.jax_platforms != "cpu")

  def entry(self, case, peer) -> dict:
    return self.results["cases"][case.id]["peers"][peer]

  def setup(self, case):
    for peer, worker in self.workers.items():
      entry = self.entry(case, peer)
      try:
        entry["setup"] = worker.request("setup", case=case_request(case, self.args))
      except WorkerError as e:
        entry["error"] = str(e)
        log(f"setup {case.id} on {peer} FAILED: {str(e).splitlines()[0]}")
        continue
      if "skipped" in entry["setup"]:
        entry["error"] = entry["setup"]["skipped"]
        log(f"setup {case.id} on {peer}: skipped ({entry['error']})")
      else:
        s = entry["setup"]
        compile_part = (
          f", lower {s['lower_s']:.2f} s + compile {s['compile_s']:.2f} s" if "compile_s" in s else ""
        )
        log(f"setup {case.id} on {peer}: first call {s['first_call_s']:.2f} s{compile_part}")

  def ceiling(self, round_index):
    worker = self.workers.get("bert_jax") or self.workers.get("bert_jax_scan")
    if worker is None or not self.args.ceiling_iters:
      return
    try:
      answer = worker.request(
        "ceiling", shapes=self.shapes, iters=self.args.ceiling_iters, dtype=self.args.dtype
      )
    except WorkerError as e:
      self.results["ceiling"]["errors"].append(str(e))
      log(f"ceiling FAILED: {str(e).splitlines()[0]}")
      return
    for shape_times, times in zip(self.results["ceiling"]["times"], answer["times"]):
      shape_times.append(times)

  def run_case(self, case, round_index):
    peers = list(self.workers)
    shift = round_index % len(peers)
    for peer in peers[shift:] + peers[:shift]:  # rotate who goes first, round to round
      entry = self.entry(case, peer)
      if "error" in entry:
        continue
      try:
        answer = self.workers[peer].request("run", case=case.id, iters=self.args.iters)
      except WorkerError as e:
        entry["error"] = str(e)
        log(f"run {case.id} on {peer} FAILED: {str(e).splitlines()[0]}")
        continue
      entry["times"].append(answer["times"])
      times = sorted(answer["times"])
      log(f"round {round_index + 1}: {case.id} {peer} median {1e3 * times[len(times) // 2]:.2f} ms")

  def release(self, case):
    for peer, worker in self.workers.items():
      if worker.dead:
        continue
      try:
        worker.request("release", case=case.id)
      except WorkerError as e:
        log(f"release {case.id} on {peer} failed: {str(e).splitlines()[0]}")

  def run(self):
    rounds = self.args.rounds
    if self.args.order == "interleaved":
      for case in self.cases:
        self.setup(case)
      for r in range(rounds):
        self.ceiling(r)
        for case in self.cases:
          self.run_case(case, r)
    else:
      for case in self.cases:
        self.setup(case)
        for r in range(rounds):
          self.ceiling(r)
          self.run_case(case, r)
        self.release(case)


def main(argv=None):
  args = parse_args(argv)
  from configs import common  # the one table of model variants

  try:
    cases = cases_lib.parse_cases(args.cases, args.modes, common.variant_sizes)
  except ValueError as e:
    raise SystemExit(f"bench.py: {e}") from None
  out = os.path.abspath(args.out)
  os.makedirs(os.path.join(out, "logs"), exist_ok=True)
  xla_flags = os.environ.get("XLA_FLAGS", "")
  load = os.getloadavg()[0]
  if load > 0.5:
    log(
      f"warning: load average {load:.2f} before starting: another job is using the cores, so the timings "
      "will be noisy (torch's OpenMP threads suffer most when a core is taken)"
    )
  if "xla_force_host_platform_device_count" in xla_flags:
    log(f"warning: XLA_FLAGS={xla_flags!r} splits the CPU into simulated devices; benchmarks want one")
  argv = sys.argv[1:] if argv is None else list(argv)
  command = " ".join(shlex.quote(a) for a in ["python", os.path.relpath(__file__, ROOT), *argv])
  for peer in args.peers:
    python = args.peers_python if peer == "hf_flax" else args.python
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
      hint = "; run experiments/benchmarks/setup_peers.sh or pass --peers-python" if peer == "hf_flax" else ""
      raise SystemExit(f"bench.py: {peer}: interpreter {python} not found or not executable{hint}")
  results = {
    "meta": {
      "command": command,
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
      "machine": machine_info(),
      "settings": {
        "rounds": args.rounds,
        "iters": args.iters,
        "warmup": args.warmup,
        "dtype": args.dtype,
        "mlm_positions": args.mlm_positions,
        "attention_kernel": args.attention_kernel,
        "order": args.order,
        "malloc": args.malloc,
        "ceiling_iters": args.ceiling_iters,
        "seed": args.seed,
        "jax_platforms": args.jax_platforms,
        "vocab_size": cases_lib.VOCAB_SIZE,
        "max_positions": cases_lib.MAX_POSITIONS,
      },
      "environment": {
        k: os.environ[k] for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
      },
      "peers": {},
    },
    "ceiling": {"dtype": args.dtype, "shapes": [], "times": [], "errors": []},
    "cases": {
      case.id: {
        "mode": case.mode,
        "variant": case.variant,
        "sizes": case.sizes,
        "batch": case.batch,
        "length": case.length,
        "peers": {peer: {"times": []} for peer in args.peers},
      }
      for case in cases
    },
  }
  inductor_cache = tempfile.mkdtemp(prefix="bench_inductor_")
  workers: dict[str, Worker] = {}
  failure = None
  started = time.perf_counter()
  try:
    for peer in args.peers:
      python = args.peers_python if peer == "hf_flax" else args.python
      workers[peer] = Worker(
        peer, python, worker_env(peer, args, inductor_cache), os.path.join(out, "logs", f"{peer}.log")
      )
    for peer, worker in workers.items():  # one at a time: imports compete for the cores otherwise
      results["meta"]["peers"][peer] = worker.request("hello")
      log(f"{peer} ready: {results['meta']['peers'][peer]}")
    bench = Bench(args, cases, workers, results)
    results["ceiling"]["shapes"] = [list(s) for s in bench.shapes]
    results["ceiling"]["times"] = [[] for _ in bench.shapes]
    bench.run()
  except WorkerError as e:
    failure = str(e)
  finally:
    for worker in workers.values():
      worker.close()
    shutil.rmtree(inductor_cache, ignore_errors=True)
    results["meta"]["wall_s"] = time.perf_counter() - started
    results["meta"]["machine"]["load_average_at_end"] = list(os.getloadavg())
    if failure:
      results["meta"]["failure"] = failure
    report.write(results, out)
  log(f"wrote {os.path.join(out, 'results.md')}")
  if failure:
    raise SystemExit(f"bench.py: {failure}")
  print(report.markdown(results))


if __name__ == "__main__":
  main()
