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
(dotted config paths -> values; the entry's win over COMMON's). Before anything runs, every run's
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
"""

from __future__ import annotations

import argparse
import contextlib
import codecs
import csv
import dataclasses
import datetime
import difflib
import io
import json
import math
import os
import re
import runpy
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Iterable, Sequence

from bert_jax import compile_cache, files, summaries

STATE_FILE = "sweep.json"
LOG_FILE = "run.log"
REPORT_DIR = "report"
# Runs live in ROOT/NAME: names are single path components that every filesystem and shell takes as is.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_RESERVED = {REPORT_DIR, STATE_FILE, compile_cache.SUBDIR}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DRAIN_SECONDS = 10.0  # after a job exits, how long the sweep keeps reading output others hold open
FINAL_LOSS_WINDOW = 3  # final train loss = mean of the last this many logged values


class SweepError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]  # the entry's own overrides
  settings: dict[str, Any]  # COMMON, then the entry's overrides: what the run is given


@dataclasses.dataclass(frozen=True)
class Sweep:
  path: str
  config: str  # the base --config argument
  common: dict[str, Any]
  runs: list[Run]

  def select(self, only: Iterable[str] | None) -> list[Run]:
    if not only:
      return list(self.runs)
    known = [r.name for r in self.runs]
    unknown = [n for n in only if n not in known]
    if unknown:
      raise SweepError(
        f"{self.path}: --only names runs {unknown} that the sweep does not have; runs: {known}"
      )
    return [r for r in self.runs if r.name in set(only)]


# --- sweep files -------------------------------------------------------------------------------


def format_value(value: Any) -> str:
  """A config value as ml_collections' --config.x=VALUE parses it for the field's type."""
  if isinstance(value, bool):
    return "True" if value else "False"
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    return value
  if value is None:
    return "None"
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  if isinstance(value, dict):
    return repr(value)
  raise TypeError(f"{value!r} ({type(value).__name__}); expected a bool, number, string, tuple or dict")


def _check_overrides(overrides: dict, where: str) -> dict[str, Any]:
  for key, value in overrides.items():
    if not isinstance(key, str) or not _KEY.match(key):
      raise SweepError(
        f"{where}: override key {key!r} is not a dotted config path such as 'model.hidden_act'"
      )
    try:
      format_value(value)
    except TypeError as e:
      raise SweepError(f"{where}: override {key}={e}") from None
  return dict(overrides)


def load_sweep(path: str, validate: bool = False, cwd: str | None = None) -> Sweep:
  """Reads and checks a sweep file (see the module docstring). validate=True also parses every run's
  overrides against CONFIG (loaded from `cwd`, the folder the runs start in), as bert_jax.main would."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise SweepError(f"{path}: sweep file not found")
  try:
    namespace = runpy.run_path(path, run_name="bert_jax_sweep")
  except Exception as e:
    raise SweepError(f"{path}: the sweep file failed to load: {type(e).__name__}: {e}") from e
  config = namespace.get("CONFIG")
  if not isinstance(config, str) or not config:
    raise SweepError(
      f"{path}: CONFIG is {'missing' if config is None else repr(config)}; expected the base --config "
      'argument as a string, e.g. CONFIG = "configs/pretrain.py:variant=tiny,objective=mlm,runlocal"'
    )
  common = namespace.get("COMMON", {})
  if not isinstance(common, dict):
    raise SweepError(f"{path}: COMMON is a {type(common).__name__}; expected a dict of config overrides")
  if "name" in common:
    raise SweepError(f"{path}: COMMON sets 'name'; a name belongs to each entry of get_sweep()")
  common = _check_overrides(common, f"{path}: COMMON")
  get_sweep = namespace.get("get_sweep")
  if not callable(get_sweep):
    raise SweepError(
      f"{path}: no get_sweep() function; expected def get_sweep(): return [dict(name=...), ...]"
    )
  try:
    entries = get_sweep()
  except Exception as e:
    raise SweepError(f"{path}: get_sweep() raised {type(e).__name__}: {e}") from e
  if not isinstance(entries, (list, tuple)) or not entries:
    raise SweepError(f"{path}: get_sweep() returned {entries!r:.80}; expected a non-empty list of dicts")
  runs, seen = [], {}
  for i, entry in enumerate(entries):
    where = f"{path}: get_sweep()[{i}]"
    if not isinstance(entry, dict):
      raise SweepError(f"{where} is a {type(entry).__name__} ({entry!r:.60}); expected a dict with a 'name'")
    if "name" not in entry:
      raise SweepError(f"{where} {entry!r:.80} has no 'name'; each run needs a unique name (its folder)")
    name = entry["name"]
    where = f"{path}: run {name!r} (get_sweep()[{i}])"
    if not isinstance(name, str) or not _NAME.match(name):
      raise SweepError(
        f"{where}: the name is not filesystem-safe; use 1-100 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
      )
    if name in _RESERVED:
      raise SweepError(f"{where}: the name {name!r} is reserved (ROOT/{name} is the sweep's own)")
    if name.lower() in seen:
      raise SweepError(
        f"{where}: the name repeats get_sweep()[{seen[name.lower()]}]'s (names must differ, ignoring case)"
      )
    seen[name.lower()] = i
    overrides = _check_overrides({k: v for k, v in entry.items() if k != "name"}, where)
    runs.append(Run(name=name, overrides=overrides, settings={**common, **overrides}))
  sweep = Sweep(path=path, config=config, common=common, runs=runs)
  if validate:
    validate_overrides(sweep, cwd=cwd)
  return sweep


@contextlib.contextmanager
def _importable_from(folder: str):
  """Config files import their neighbours (`from configs import common`) as bert_jax.main does, with
  the run's folder first on sys.path."""
  sys.path.insert(0, folder)
  try:
    yield
  finally:
    sys.path.remove(folder)


def _parse_config(config_arg: str, override_args: Sequence[str], cwd: str):
  from absl import flags
  from ml_collections import config_flags

  file, sep, arg = config_arg.partition(":")
  config_arg = os.path.join(cwd, file) + sep + arg
  argv = ["bert_jax.main", f"--config={config_arg}", *override_args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True, sys_argv=argv)
  with _importable_from(cwd), warnings.catch_warnings():
    warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)  # inside ml_collections
    flag_values(argv)
    return flag_values.config


def validate_overrides(sweep: Sweep, extra: Sequence[str] = (), cwd: str | None = None) -> None:
  """Parses CONFIG with each run's overrides (and the --config.* items of `extra`) the way
  bert_jax.main does; the first problem raises SweepError naming the run and the key."""
  cwd = os.path.abspath(cwd or os.getcwd())
  try:
    base = _parse_config(sweep.config, [], cwd)
  except Exception as e:
    raise SweepError(f"{sweep.path}: CONFIG={sweep.config!r} does not load (from {cwd}): {e}") from e
  for run in sweep.runs:
    for key in run.settings:
      node, parts = base, key.split(".")
      for depth, part in enumerate(parts):
        if not hasattr(node, "keys") or part not in node:
          siblings = list(node.keys()) if hasattr(node, "keys") else []
          close = difflib.get_close_matches(part, siblings, n=1)
          hint = f"; did you mean {'.'.join(parts[:depth] + close)!r}?" if close else ""
          raise SweepError(
            f"{sweep.path}: run {run.name!r}: override {key!r}: {sweep.config} has no field "
            f"{'.'.join(parts[: depth + 1])!r}{hint}"
          )
        node = node[part]
    args = [f"--config.{k}={format_value(v)}" for k, v in run.settings.items()]
    args += [a for a in extra if a.startswith("--config.")]
    try:
      _parse_config(sweep.config, args, cwd)
    except Exception as e:
      raise SweepError(f"{sweep.path}: run {run.name!r}: the overrides do not parse: {e}") from e


# --- commands ----------------------------------------------------------------------------------


def workdir(root: str, name: str) -> str:
  return os.path.join(root, name)


def main_args(sweep: Sweep, run: Run, root: str, extra: Sequence[str] = ()) -> list[str]:
  """bert_jax.main's arguments for one run."""
  return [
    f"--config={sweep.config}",
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


def read_state(root: str) -> dict:
  path = os.path.join(root, STATE_FILE)
  if not os.path.exists(path):
    return {"runs": {}}
  try:
    with open(path, encoding="utf-8") as f:
      state = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise SweepError(
      f"{path}: unreadable sweep record ({e}); move it aside to start the record afresh"
    ) from e
  if not isinstance(state, dict) or not isinstance(state.get("runs"), dict):
    raise SweepError(f"{path}: expected a JSON object with a 'runs' object")
  return state


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _incomplete(run_dir: str) -> str | None:
  """Why a pretraining run that exited 0 has not finished (SIGTERM saves and exits 0), or None."""
  try:
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  if config.get("job") != "pretrain" or not isinstance(config.get("total_steps"), int):
    return None
  metrics_path = os.path.join(run_dir, summaries.METRICS_FILE)
  steps = [r["step"] for r in _read_metrics(metrics_path) if "train/loss" in r]
  reached = max(steps, default=0)
  if reached < config["total_steps"]:
    return f"stopped at step {reached} of {config['total_steps']}"
  return None


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
    args = argv[3:]  # bert_jax.main's arguments: the record compared on a rerun
    previous = records.get(name)
    if previous and previous.get("status") == "ok" and previous.get("args") == args:
      print(f"[{index}/{len(selected)}] {name}: finished earlier, skipped", flush=True)
      results[name] = previous
      continue
    if previous and previous.get("status") == "ok":
      print(
        f"[{index}/{len(selected)}] {name}: arguments changed since it finished; running again", flush=True
      )
    run_dir = os.path.join(root, name)
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, LOG_FILE)
    print(f"[{index}/{len(selected)}] {name}: {shlex.join(argv)}\n  log: {log_path}", flush=True)
    record = {"status": "running", "command": argv, "args": args, "log": log_path, "started": _now()}
    records[name] = record
    _write_state(state_path, state)
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
      reason = _incomplete(run_dir)
      record["status"] = "ok" if reason is None else "incomplete"
      if reason:
        record["error"] = reason
    else:
      record["status"] = "failed"
      last = _last_line(log_path)
      if last:
        record["error"] = last
    _write_state(state_path, state)
    results[name] = record
    print(
      f"[{index}/{len(selected)}] {name}: {record['status']} (return code {returncode}, "
      f"{record['wall_seconds']:.1f} s)" + (f": {record['error']}" if "error" in record else ""),
      flush=True,
    )
    if signals.received:
      print("sweep interrupted; the same command resumes it", flush=True)
      break
  return results


# --- results -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
  name: str
  overrides: str
  final_train_loss: float | None
  last_eval_loss: float | None
  last_eval_mlm_accuracy: float | None
  best_eval_mlm_accuracy: float | None
  median_tokens_per_second: float | None
  steps: int | None
  status: str
  error: str = ""  # why a run is not ok, when known (the job's last log line)
  records: list[dict] = dataclasses.field(default_factory=list, repr=False)

  def row(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "records"}


COLUMNS = [
  ("name", "run"),
  ("overrides", "overrides"),
  ("final_train_loss", f"final train loss (mean of last {FINAL_LOSS_WINDOW})"),
  ("last_eval_loss", "eval loss"),
  ("last_eval_mlm_accuracy", "eval MLM acc"),
  ("best_eval_mlm_accuracy", "best eval MLM acc"),
  ("median_tokens_per_second", "tokens/s (median)"),
  ("steps", "steps"),
  ("status", "status"),
]


def _read_metrics(path: str) -> list[dict]:
  return summaries.read_metrics(path) if os.path.exists(path) else []


def _series(records: list[dict], key: str) -> list[tuple[int, float]]:
  return [(r["step"], float(r[key])) for r in records if key in r and r[key] is not None]


def compact(overrides: dict[str, Any]) -> str:
  return ", ".join(f"{k}={format_value(v)}" for k, v in overrides.items()) or "(base)"


def collect(sweep: Sweep, root: str) -> list[Result]:
  """One Result per run, in sweep order, from ROOT/NAME/metrics.jsonl and ROOT/sweep.json. A run
  without metrics is reported with empty values, not skipped."""
  try:
    recorded = read_state(root)["runs"]
  except SweepError:
    recorded = {}
  results = []
  for run in sweep.runs:
    run_dir = os.path.join(root, run.name)
    status = recorded.get(run.name, {}).get("status")
    error = recorded.get(run.name, {}).get("error", "")
    try:
      records = _read_metrics(os.path.join(run_dir, summaries.METRICS_FILE))
    except (OSError, ValueError) as e:
      records, status, error = [], "unreadable", f"metrics: {e}"
    losses = [v for _, v in _series(records, "train/loss")]
    eval_loss = _series(records, "eval/loss")
    eval_acc = [v for _, v in _series(records, "eval/mlm_accuracy")]
    speed = [v for _, v in _series(records, "train/tokens_per_second")]
    if status is None:  # not run by this runner (e.g. on a pod): judge by the metrics
      error = (_incomplete(run_dir) or "") if records else "no metrics.jsonl"
      status = "missing" if not records else ("incomplete" if error else "ok")
    results.append(
      Result(
        name=run.name,
        overrides=compact(run.overrides),
        final_train_loss=statistics.fmean(losses[-FINAL_LOSS_WINDOW:]) if losses else None,
        last_eval_loss=eval_loss[-1][1] if eval_loss else None,
        last_eval_mlm_accuracy=eval_acc[-1] if eval_acc else None,
        best_eval_mlm_accuracy=max(eval_acc) if eval_acc else None,
        median_tokens_per_second=statistics.median(speed) if speed else None,
        steps=max((r["step"] for r in records), default=None),
        status=status,
        error=error,
        records=records,
      )
    )
  return results


def format_number(value) -> str:
  """4 significant digits; thousands (throughputs) as whole numbers with separators; None as a dash."""
  if value is None:
    return "—"
  if isinstance(value, int):
    return str(value)
  if not math.isfinite(value):
    return str(value)
  if abs(value) >= 1000:
    return f"{value:,.0f}"
  return f"{value:.4g}"


def _md_cell(value) -> str:
  text = value if isinstance(value, str) else format_number(value)
  return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
  header: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: Sequence[int] = ()
) -> str:
  """A GitHub markdown table; numbers right-aligned and rounded (format_number), text left-aligned."""
  align = ["---" if i in text_columns else "---:" for i in range(len(header))]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
  lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def _save_figure(fig, path: str) -> None:
  import matplotlib.pyplot as plt

  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=100)
  plt.close(fig)


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot_runs(results: Sequence[Result], path: str) -> str:
  """Train loss per run against step, and held-out MLM accuracy (eval loss when no run has it)."""
  plt = _pyplot()
  right = (
    "eval/mlm_accuracy" if any(_series(r.records, "eval/mlm_accuracy") for r in results) else "eval/loss"
  )
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for result in results:
    for ax, key, marker in ((axes[0], "train/loss", None), (axes[1], right, "o")):
      points = _series(result.records, key)
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, marker=marker, label=result.name)
  for ax, title in zip(axes, ("train loss", right)):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.has_data():
      ax.legend(fontsize="small")
  fig.tight_layout()
  _save_figure(fig, path)
  return path


def write_report(sweep: Sweep, root: str, out: str | None = None) -> list[Result]:
  """results.md, results.csv and loss_curves.png in `out` (default ROOT/report)."""
  out = out or os.path.join(root, REPORT_DIR)
  results = collect(sweep, root)
  keys = [k for k, _ in COLUMNS]
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(keys)
  for result in results:
    row = result.row()
    writer.writerow(["" if row[k] is None else row[k] for k in keys])
  files.write_text(os.path.join(out, "results.csv"), buffer.getvalue())
  common = compact(sweep.common) if sweep.common else "none"
  text = (
    f"# Sweep {os.path.basename(sweep.path)}\n\n"
    f"Base config `{sweep.config}`; overrides for every run: `{common}`; runs in `{os.path.abspath(root)}`.\n"
    f"Final train loss: the mean of the last {FINAL_LOSS_WINDOW} logged train/loss values. Eval columns: "
    "the last evaluation, and the best one for MLM accuracy. tokens/s: the median over logging windows "
    "(the first includes compilation). — : no value logged.\n\n"
    + markdown_table(
      [title for _, title in COLUMNS],
      [[r.row()[k] for k in keys] for r in results],
      text_columns=(0, 1, len(keys) - 1),
    )
    + "".join(f"\n- {r.name}: {r.status}: {r.error}" for r in results if r.status != "ok" and r.error)
    + "\n\n![loss curves](loss_curves.png)\n"
  )
  files.write_text(os.path.join(out, "results.md"), text)
  plot_runs(results, os.path.join(out, "loss_curves.png"))
  return results


# --- attention scaling -------------------------------------------------------------------------


def read_scaling(paths: Sequence[str]) -> list[dict]:
  """Benchmark records from JSON files, each a list of {"attention": str, "seq_len": int, "ms": float
  (median time per layer), "peak_bytes": int or null, "status": "ok" or the reason it did not run}."""
  records = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        values = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise SweepError(f"{path}: cannot read scaling records: {e}") from e
    if not isinstance(values, list):
      raise SweepError(f"{path}: expected a JSON list of records, got {type(values).__name__}")
    records += [dict(r, _where=f"{path}[{i}]") if isinstance(r, dict) else r for i, r in enumerate(values)]
  return records


def _check_scaling(records: Sequence[dict]) -> list[dict]:
  checked, seen = [], {}
  for i, record in enumerate(records):
    where = record.get("_where", f"record {i}") if isinstance(record, dict) else f"record {i}"
    if not isinstance(record, dict):
      raise SweepError(f"scaling {where}: {record!r:.60} is not an object")
    problems = []
    if not isinstance(record.get("attention"), str) or not record.get("attention"):
      problems.append("attention (a name)")
    if not isinstance(record.get("seq_len"), int) or isinstance(record.get("seq_len"), bool):
      problems.append("seq_len (an integer)")
    if not isinstance(record.get("status"), str):
      problems.append('status ("ok" or a reason)')
    ok = record.get("status") == "ok"
    ms = record.get("ms")
    if ok and (not isinstance(ms, (int, float)) or isinstance(ms, bool) or not ms > 0):
      problems.append("ms (a positive number when status is ok)")
    peak = record.get("peak_bytes")
    if peak is not None and (not isinstance(peak, int) or isinstance(peak, bool) or peak < 0):
      problems.append("peak_bytes (an integer or null)")
    if problems:
      raise SweepError(f"scaling {where} {record!r:.120}: expected " + ", ".join(problems))
    key = (record["attention"], record["seq_len"])
    if key in seen:
      raise SweepError(f"scaling {where}: {key[0]} at seq_len {key[1]} repeats {seen[key]}")
    seen[key] = where
    checked.append(record)
  return checked


def write_scaling(records: Sequence[dict], out: str, source: str = "") -> tuple[str, str]:
  """scaling.md (rows: sequence lengths; per attention: ms per layer and peak MiB; a record that did
  not run shows its status) and scaling.png (log-log time and memory against sequence length, one line
  per attention, "ok" records only). Returns the two paths."""
  records = _check_scaling(records)
  attentions = list(dict.fromkeys(r["attention"] for r in records))
  lengths = sorted({r["seq_len"] for r in records})
  by_key = {(r["attention"], r["seq_len"]): r for r in records}
  header = ["seq_len"] + [f"{a} {unit}" for a in attentions for unit in ("ms", "MiB")]
  rows = []
  for length in lengths:
    row: list[Any] = [length]
    for attention in attentions:
      r = by_key.get((attention, length))
      if r is None:
        row += [None, None]
      elif r["status"] != "ok":
        row += [r["status"], None]
      else:
        row += [float(r["ms"]), None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20]
    rows.append(row)
  md_path = os.path.join(out, "scaling.md")
  files.write_text(
    md_path,
    "# Attention scaling\n\n"
    + (f"Records: {source}. " if source else "")
    + "ms: median time per layer; MiB: peak memory; a cell with words: the run's status; —: not measured.\n\n"
    + markdown_table(header, rows)
    + "\n![scaling](scaling.png)\n",
  )
  plt = _pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
  for attention in attentions:
    ok = sorted(
      (r for r in records if r["attention"] == attention and r["status"] == "ok"), key=lambda r: r["seq_len"]
    )
    if ok:
      axes[0].plot([r["seq_len"] for r in ok], [r["ms"] for r in ok], marker="o", label=attention)
      # Throughput per sequence position: tokens through the layer per second (batch 1).
      axes[2].plot(
        [r["seq_len"] for r in ok], [r["seq_len"] * 1e3 / r["ms"] for r in ok], marker="o", label=attention
      )
    mem = [r for r in ok if r["peak_bytes"] is not None]
    if mem:
      axes[1].plot(
        [r["seq_len"] for r in mem], [r["peak_bytes"] / 2**20 for r in mem], marker="o", label=attention
      )
  titles = ("time per layer", "peak memory", "throughput per layer")
  for ax, title, unit in zip(axes, titles, ("ms", "MiB", "tokens/s")):
    ax.set_title(title)
    ax.set_xlabel("sequence length")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3, which="both")
    if ax.has_data():
      ax.set_xscale("log", base=2)
      ax.set_xticks(lengths, [str(n) for n in lengths])
      ax.set_yscale("log")
      ax.legend(fontsize="small")
  fig.tight_layout()
  png_path = os.path.join(out, "scaling.png")
  _save_figure(fig, png_path)
  return md_path, png_path


# --- command line ------------------------------------------------------------------------------


def _split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
  for i, item in enumerate(argv):
    if item in ("--", "--extra"):
      return argv[:i], argv[i + 1 :]
  return argv, []


def main(argv: Sequence[str] | None = None) -> int:
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
  argv, extra = _split_extra(list(sys.argv[1:] if argv is None else argv))
  args, unknown = parser.parse_known_args(argv)
  bad = [u for u in unknown if not u.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments: {' '.join(bad)}")
  extra = unknown + extra
  only = [n for n in (args.only or "").split(",") if n]
  try:
    try:
      files.require_local(args.root, "--root")
      if getattr(args, "out", None):
        files.require_local(args.out, "--out")
    except ValueError as e:
      raise SweepError(str(e)) from None
    sweep = load_sweep(args.sweep)
    sweep.select(only)
    if args.command == "report":
      if extra:
        parser.error("report takes no job arguments")
      sweep = dataclasses.replace(sweep, runs=sweep.select(only))
      results = write_report(sweep, args.root, args.out)
      out = args.out or os.path.join(args.root, REPORT_DIR)
      if args.scaling:
        write_scaling(read_scaling(args.scaling), out, source=", ".join(args.scaling))
      print(f"{len(results)} runs ({sum(r.status == 'ok' for r in results)} ok): {out}/results.md")
      return 0
    if not args.no_validate:
      validate_overrides(sweep, extra=extra)
    if args.command == "print":
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
    results = run_sweep(sweep, args.root, only=only, extra=extra, echo=not args.quiet)
  except SweepError as e:
    print(f"bert_jax.sweeps: {e}", file=sys.stderr)
    return 2
  not_ok = {n: r["status"] for n, r in results.items() if r["status"] != "ok"}
  print(
    f"sweep: {len(results) - len(not_ok)} of {len(results)} runs ok"
    + (f"; not ok: {not_ok}" if not_ok else "")
    + f"\n  record: {os.path.join(os.path.abspath(args.root), STATE_FILE)}"
    + f"\n  report: python -m bert_jax.sweeps report {shlex.join([args.sweep, '--root', args.root])}",
    flush=True,
  )
  return 1 if not_ok else 0


if __name__ == "__main__":
  sys.exit(main())
