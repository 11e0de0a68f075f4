"""Ablation sweeps: many pretraining runs that differ in a few config fields, run one after another,
then compared in one table and one plot.

    python -m bert_jax.sweeps run SWEEP.py --root DIR [--only a,b] [-- --config.k=v ...]
    python -m bert_jax.sweeps print SWEEP.py --root /gcs/BUCKET/study [--launcher local | tpu NAME ZONE | gpu]
    python -m bert_jax.sweeps report SWEEP.py --root DIR [--out DIR/report] [--scaling FILE.json ...]

A sweep file is Python:

    CONFIG = "configs/pretrain.py:variant=tiny,objective=mlm,runlocal"  # the base --config argument
    COMMON = {"total_steps": 300, "data.source": "data/samples/en_mobydick.txt"}  # optional, every run
    def get_sweep():
      return [{"name": "gelu", "model.hidden_act": "gelu"}, {"name": "tanh", "model.hidden_act": "gelu_tanh"}]

Each entry is a run: a unique, filesystem-safe "name" (its workdir is ROOT/NAME) and config overrides
(dotted config paths -> values; the entry's win over COMMON's). An entry may carry its own base config,
"config": "configs/finetune.py:task=mrpc,seeds=5,lr_grid", in place of CONFIG (which may then be left out
when every entry has one): the tasks of a paper table differ in their config argument. Before anything runs, every run's
overrides are parsed against CONFIG exactly as `bert_jax.main` parses them, so a misspelled key or a
value of the wrong type fails at once, naming the run and the key.

`run` starts `python -m bert_jax.main` once per run, streams its output to ROOT/NAME/run.log (and the
terminal), and records each run's status, return code, wall seconds and command in ROOT/sweep.json. A
failed run does not stop the sweep; the exit status is 1 if any run did not finish. Started again, the
sweep skips the runs it recorded as finished with the same arguments and runs the others: an
interrupted run resumes from its own checkpoint (train.py), a failed one is tried again. SIGTERM or
Ctrl-C is passed on to the running job, which saves a checkpoint and stops; the sweep stops after it.

`print` writes one shell-quoted command per run instead (launch.sh's tpu or gpu form, or the local
one), for running the study elsewhere, e.g. on a TPU pod with ROOT in a bucket mounted on every worker
(README, 'Cloud Storage'; a gs:// ROOT is refused, as bert_jax.main refuses a gs:// workdir).

`report` reads every run's metrics.jsonl and writes results.md, results.csv (full-precision numbers;
results.md rounds to 4 significant digits) and loss_curves.png; with --scaling, the attention
benchmark records (see `write_scaling`) become scaling.md and scaling.png. It reads local folders:
copy a bucket's runs down first (e.g. gsutil -m rsync -r).

This module runs sweeps and prints their commands, and is the command line; reading and checking the
sweep file and the study folder is sweep_spec.py's job, the report and scaling plots sweep_report.py's.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence

from bert_jax import compile_cache, files

# The sweep file and study folder (sweep_spec.py) and the report (sweep_report.py) are importable from
# here too, as they were when this module held them.
from bert_jax.sweep_report import (  # noqa: F401
  COLUMNS,
  FINAL_LOSS_WINDOW,
  Result,
  collect,
  compact,
  format_number,
  markdown_table,
  plot_runs,
  read_scaling,
  write_report,
  write_scaling,
)
from bert_jax.sweep_spec import (  # noqa: F401
  LOG_FILE,
  REPORT_DIR,
  STATE_FILE,
  Run,
  Sweep,
  SweepError,
  format_value,
  incomplete,
  load_sweep,
  read_run_metrics,
  read_state,
  validate_overrides,
)

DRAIN_SECONDS = 10.0  # after a job exits, how long the sweep keeps reading output others hold open


# --- commands ----------------------------------------------------------------------------------


def workdir(root: str, name: str) -> str:
  return os.path.join(root, name)


def main_args(sweep: Sweep, run: Run, root: str, extra: Sequence[str] = ()) -> list[str]:
  """bert_jax.main's arguments for one run."""
  return [
    f"--config={run.config or sweep.config}",
    f"--workdir={workdir(root, run.name)}",
    *(f"--config.{k}={format_value(v)}" for k, v in run.settings.items()),
    *extra,
  ]


def commands(
  sweep: Sweep,
  root: str,
  launcher: Sequence[str] = ("local",),
  extra: Sequence[str] = (),
  python: str = "python",
  only: Iterable[str] | None = None,
) -> list[tuple[str, list[str]]]:
  """(name, argv) per run. launcher: ("local",), ("tpu", NAME, ZONE) or ("gpu",): launch.sh's forms."""
  kind, *launcher_args = launcher or ("local",)
  want = {"local": 0, "tpu": 2, "gpu": 0}
  if kind not in want or len(launcher_args) != want[kind]:
    raise SweepError(f"launcher {list(launcher)}; expected 'local', 'tpu NAME ZONE' or 'gpu'")
  for item in extra:
    if item.split("=", 1)[0] in ("--config", "--workdir"):
      raise SweepError(f"extra argument {item!r}: the sweep sets --config and --workdir itself")
  out = []
  for run in sweep.select(only):
    args = main_args(sweep, run, root, extra)
    if kind == "local":
      argv = [python, "-m", "bert_jax.main", *args]
    elif kind == "tpu":
      argv = ["bash", "launch.sh", "tpu", *launcher_args, "--", *args]
    else:
      argv = ["bash", "launch.sh", "gpu", "--", *args]
    out.append((run.name, argv))
  return out


# --- running -----------------------------------------------------------------------------------


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _last_line(path: str) -> str:
  """The last non-empty line of a log (a job's final error message), at most 300 characters."""
  try:
    with open(path, "rb") as f:
      f.seek(max(0, os.path.getsize(path) - 4096))
      lines = [line.strip() for line in f.read().decode("utf-8", errors="replace").splitlines()]
  except OSError:
    return ""
  lines = [line for line in lines if line]
  return lines[-1][:300] if lines else ""


def _write_state(path: str, state: dict) -> None:
  files.write_text(path, json.dumps(state, indent=2) + "\n")  # in sweep order, not sorted


class _Signals:
  """While a job runs: the first SIGTERM/SIGINT is passed on as SIGTERM (the job saves a checkpoint
  and stops), a second one kills it."""

  def __init__(self):
    self.received: list[int] = []
    self.proc = None
    self._previous = {}

  def _handle(self, signum, frame):
    self.received.append(signum)
    self._forward()

  def _forward(self):
    if self.received and self.proc is not None and self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM if len(self.received) == 1 else signal.SIGKILL)

  def attach(self, proc) -> None:
    """The job to pass signals to; one that came while it was starting is passed on now."""
    self.proc = proc
    self._forward()

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _copy_output(fd: int, log_path: str, echo: bool) -> None:
  """Copies a job's output to its log (and the terminal) until every writer has closed it."""
  decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
  try:
    with open(log_path, "ab") as log:
      while chunk := os.read(fd, 1 << 16):
        log.write(chunk)
        log.flush()
        if echo:
          sys.stdout.write(decoder.decode(chunk))
          sys.stdout.flush()
  finally:
    os.close(fd)


def _run_job(argv: list[str], log_path: str, env, cwd, echo: bool, signals: _Signals) -> int:
  with open(log_path, "ab") as log:
    log.write(f"# bert_jax.sweeps {_now()}: {shlex.join(argv)}\n".encode())
  proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
  signals.attach(proc)
  # The reader owns its own descriptor: a process the job leaves behind (e.g. a data worker) may hold
  # the output open after the job ends, and the sweep must not wait for it.
  fd = os.dup(proc.stdout.fileno())
  proc.stdout.close()
  reader = threading.Thread(target=_copy_output, args=(fd, log_path, echo), daemon=True)
  reader.start()
  try:
    returncode = proc.wait()
  finally:
    signals.proc = None
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  reader.join(DRAIN_SECONDS)
  if reader.is_alive():
    with open(log_path, "ab") as log:
      log.write(b"\n# bert_jax.sweeps: the job ended; a process it started still holds its output open\n")
  return returncode


def run_sweep(
  sweep: Sweep,
  root: str,
  only: Iterable[str] | None = None,
  extra: Sequence[str] = (),
  env: dict | None = None,
  cwd: str | None = None,
  echo: bool = True,
  python: str = sys.executable,
) -> dict[str, dict]:
  """Runs the selected runs one after another (see the module docstring); returns their records as
  written to ROOT/sweep.json, in sweep order. `cwd` is where the jobs start (default: here)."""
  root = os.path.abspath(root)
  os.makedirs(root, exist_ok=True)
  state = read_state(root)
  state.update(sweep=os.path.abspath(sweep.path), config=sweep.config)
  records = state["runs"]
  state_path = os.path.join(root, STATE_FILE)
  selected = commands(sweep, root, ("local",), extra, python=python, only=only)
  # One XLA compilation cache for the sweep's runs: runs of the same shapes (a seed grid) compile once.
  env = dict(os.environ if env is None else env)
  env.setdefault(compile_cache.ENV, os.path.join(root, compile_cache.SUBDIR))
  results = {}
  for index, (name, argv) in enumerate(selected, 1):
    tag = f"[{index}/{len(selected)}] {name}"
    args = argv[3:]  # bert_jax.main's arguments: the record compared on a rerun
    if _finished_earlier(records.get(name), args, tag):
      results[name] = records[name]
      continue
    run_dir = os.path.join(root, name)
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, LOG_FILE)
    print(f"{tag}: {shlex.join(argv)}\n  log: {log_path}", flush=True)
    record = {"status": "running", "command": argv, "args": args, "log": log_path, "started": _now()}
    records[name] = record
    _write_state(state_path, state)
    interrupted = _run_and_record(record, argv, run_dir, log_path, env, cwd, echo)
    _write_state(state_path, state)
    results[name] = record
    print(
      f"{tag}: {record['status']} (return code {record['returncode']}, "
      f"{record['wall_seconds']:.1f} s)" + (f": {record['error']}" if "error" in record else ""),
      flush=True,
    )
    if interrupted:
      print("sweep interrupted; the same command resumes it", flush=True)
      break
  return results


def _finished_earlier(previous: dict | None, args: list[str], tag: str) -> bool:
  """Whether the run finished earlier with the same arguments (and is skipped); says which."""
  if previous and previous.get("status") == "ok" and previous.get("args") == args:
    print(f"{tag}: finished earlier, skipped", flush=True)
    return True
  if previous and previous.get("status") == "ok":
    print(f"{tag}: arguments changed since it finished; running again", flush=True)
  return False


def _run_and_record(record: dict, argv: list[str], run_dir: str, log_path: str, env, cwd, echo: bool) -> bool:
  """Runs one job and fills in its record (return code, wall time, status, why not ok); True if the
  sweep was interrupted while it ran."""
  start = time.monotonic()
  with _Signals() as signals:
    try:
      returncode = _run_job(argv, log_path, env, cwd, echo, signals)
    except OSError as e:
      returncode, record["error"] = None, f"could not start: {e}"
  record.update(returncode=returncode, wall_seconds=round(time.monotonic() - start, 3), finished=_now())
  if signals.received:
    record["status"] = "interrupted"
  elif returncode == 0:
    reason = incomplete(run_dir)
    record["status"] = "ok" if reason is None else "incomplete"
    if reason:
      record["error"] = reason
  else:
    record["status"] = "failed"
    last = _last_line(log_path)
    if last:
      record["error"] = last
  return bool(signals.received)


# --- command line ------------------------------------------------------------------------------


def _split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
  for i, item in enumerate(argv):
    if item in ("--", "--extra"):
      return argv[:i], argv[i + 1 :]
  return argv, []


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m bert_jax.sweeps",
    description="\n\n".join(__doc__.split("\n\n")[:2]),
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="Arguments after -- (or --extra) go to every run's bert_jax.main, e.g. -- --config.total_steps=50;"
    " --config.x=y items may also be given without it.",
  )
  sub = parser.add_subparsers(dest="command", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("sweep", help="the sweep file (CONFIG, optional COMMON, get_sweep())")
  common.add_argument("--root", required=True, help="the study's folder: runs go to ROOT/NAME")
  common.add_argument("--only", help="comma-separated run names (default: all)")
  common.add_argument(
    "--no-validate", action="store_true", help="do not parse the overrides against CONFIG first"
  )
  run_p = sub.add_parser("run", parents=[common], help="run the sweep here, one run after another")
  run_p.add_argument("--quiet", action="store_true", help="only the logs get the jobs' output")
  print_p = sub.add_parser("print", parents=[common], help="print one shell command per run")
  print_p.add_argument(
    "--launcher",
    nargs="+",
    default=["local"],
    metavar="KIND",
    help="local | tpu NAME ZONE | gpu (launch.sh's forms)",
  )
  print_p.add_argument("--python", default="python", help="the interpreter of local commands")
  report_p = sub.add_parser("report", parents=[common], help="results table and plots from the runs' metrics")
  report_p.add_argument("--out", help="output folder (default ROOT/report)")
  report_p.add_argument(
    "--scaling", nargs="+", default=[], metavar="FILE.json", help="attention benchmark records"
  )
  return parser


def _parse(
  parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[argparse.Namespace, list[str], list[str]]:
  """(arguments, the jobs' extra arguments, the --only names). --config.x=y items count as extra."""
  argv, extra = _split_extra(argv)
  args, unknown = parser.parse_known_args(argv)
  bad = [u for u in unknown if not u.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments: {' '.join(bad)}")
  only = [n for n in (args.only or "").split(",") if n]
  return args, unknown + extra, only


def _require_local(args: argparse.Namespace) -> None:
  try:
    files.require_local(args.root, "--root")
    if getattr(args, "out", None):
      files.require_local(args.out, "--out")
  except ValueError as e:
    raise SweepError(str(e)) from None


def _report(args: argparse.Namespace, sweep: Sweep, only: list[str]) -> int:
  sweep = dataclasses.replace(sweep, runs=sweep.select(only))
  results = write_report(sweep, args.root, args.out)
  out = args.out or os.path.join(args.root, REPORT_DIR)
  if args.scaling:
    write_scaling(read_scaling(args.scaling), out, source=", ".join(args.scaling))
  print(f"{len(results)} runs ({sum(r.status == 'ok' for r in results)} ok): {out}/results.md")
  return 0


def _print_commands(args: argparse.Namespace, sweep: Sweep, only: list[str], extra: list[str]) -> int:
  lines = commands(sweep, args.root, args.launcher, extra, python=args.python, only=only)
  if args.launcher[0] != "local":
    print(
      f"# note: --root {args.root} must be a path every worker sees (a shared file system, or the bucket "
      "mounted on every worker: README, 'Cloud Storage')",
      file=sys.stderr,
    )
  for _, command in lines:
    print(shlex.join(command))
  return 0


def _summary(args: argparse.Namespace, results: dict[str, dict]) -> int:
  """Prints how the sweep went and where its record is; 1 if any run is not ok."""
  not_ok = {n: r["status"] for n, r in results.items() if r["status"] != "ok"}
  print(
    f"sweep: {len(results) - len(not_ok)} of {len(results)} runs ok"
    + (f"; not ok: {not_ok}" if not_ok else "")
    + f"\n  record: {os.path.join(os.path.abspath(args.root), STATE_FILE)}"
    + f"\n  report: python -m bert_jax.sweeps report {shlex.join([args.sweep, '--root', args.root])}",
    flush=True,
  )
  return 1 if not_ok else 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  args, extra, only = _parse(parser, list(sys.argv[1:] if argv is None else argv))
  try:
    _require_local(args)
    sweep = load_sweep(args.sweep)
    sweep.select(only)
    if args.command == "report":
      if extra:
        parser.error("report takes no job arguments")
      return _report(args, sweep, only)
    if not args.no_validate:
      validate_overrides(sweep, extra=extra)
    if args.command == "print":
      return _print_commands(args, sweep, only, extra)
    results = run_sweep(sweep, args.root, only=only, extra=extra, echo=not args.quiet)
  except SweepError as e:
    print(f"bert_jax.sweeps: {e}", file=sys.stderr)
    return 2
  return _summary(args, results)


if __name__ == "__main__":
  sys.exit(main())
