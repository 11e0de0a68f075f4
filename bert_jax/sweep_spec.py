"""A sweep and its study folder: the sweep file (CONFIG, COMMON, get_sweep()) read, checked and
validated against CONFIG as bert_jax.main would parse it, and the folder its runs live in (ROOT/NAME,
ROOT/sweep.json, each run's metrics.jsonl) read back. The runner (sweeps.py) and the report
(sweep_report.py) both stand on this; the sweep file's format is described in sweeps.py's docstring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import re
import runpy
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from bert_jax import compile_cache, summaries

STATE_FILE = "sweep.json"
LOG_FILE = "run.log"
REPORT_DIR = "report"
# Runs live in ROOT/NAME: names are single path components that every filesystem and shell takes as is.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_RESERVED = {REPORT_DIR, STATE_FILE, compile_cache.SUBDIR}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SweepError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]  # the entry's own overrides
  settings: dict[str, Any]  # COMMON, then the entry's overrides: what the run is given
  config: str = ""  # the run's base --config argument: the entry's "config", else the sweep's CONFIG


@dataclasses.dataclass(frozen=True)
class Sweep:
  path: str
  config: str  # the base --config argument ("" when every entry names its own)
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
  """Reads and checks a sweep file (see sweeps.py's docstring). validate=True also parses every run's
  overrides against CONFIG (loaded from `cwd`, the folder the runs start in), as bert_jax.main would."""
  path = os.fspath(path)
  namespace = _run_sweep_file(path)
  common = _read_common(namespace, path)
  entries = _read_entries(namespace, path)
  # CONFIG may be left out when every entry carries its own base config ("config": "configs/x.py:arg").
  own = all(isinstance(e, dict) and "config" in e for e in entries)
  config = "" if own and namespace.get("CONFIG") is None else _read_config(namespace, path)
  runs, seen = [], {}
  for i, entry in enumerate(entries):
    runs.append(_read_run(entry, i, path, common, seen, config))
  sweep = Sweep(path=path, config=config, common=common, runs=runs)
  if validate:
    validate_overrides(sweep, cwd=cwd)
  return sweep


def _run_sweep_file(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise SweepError(f"{path}: sweep file not found")
  try:
    return runpy.run_path(path, run_name="bert_jax_sweep")
  except Exception as e:
    raise SweepError(f"{path}: the sweep file failed to load: {type(e).__name__}: {e}") from e


def _read_config(namespace: dict[str, Any], path: str) -> str:
  config = namespace.get("CONFIG")
  if not isinstance(config, str) or not config:
    raise SweepError(
      f"{path}: CONFIG is {'missing' if config is None else repr(config)}; expected the base --config "
      'argument as a string, e.g. CONFIG = "configs/pretrain.py:variant=tiny,objective=mlm,runlocal" '
      '(or a "config" in every entry of get_sweep())'
    )
  return config


def _read_common(namespace: dict[str, Any], path: str) -> dict[str, Any]:
  common = namespace.get("COMMON", {})
  if not isinstance(common, dict):
    raise SweepError(f"{path}: COMMON is a {type(common).__name__}; expected a dict of config overrides")
  if "name" in common:
    raise SweepError(f"{path}: COMMON sets 'name'; a name belongs to each entry of get_sweep()")
  return _check_overrides(common, f"{path}: COMMON")


def _read_entries(namespace: dict[str, Any], path: str) -> list | tuple:
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
  return entries


def _read_run(
  entry: Any, i: int, path: str, common: dict[str, Any], seen: dict[str, int], config: str
) -> Run:
  """get_sweep()[i] as a Run; `seen` (lower-cased name -> index) gathers the names so far; `config` is the
  sweep's CONFIG, which the entry's own "config" replaces."""
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
  if "config" in entry:
    config = entry["config"]
    if not isinstance(config, str) or not config:
      raise SweepError(
        f"{where}: 'config' is {config!r}; expected the run's base --config argument as a string, "
        'e.g. "configs/finetune.py:task=mrpc,seeds=5,lr_grid"'
      )
  overrides = _check_overrides({k: v for k, v in entry.items() if k not in ("name", "config")}, where)
  return Run(name=name, overrides=overrides, settings={**common, **overrides}, config=config)


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
  bases = {}
  for run in sweep.runs:
    if run.config not in bases:
      try:
        bases[run.config] = _parse_config(run.config, [], cwd)
      except Exception as e:
        what = "CONFIG" if run.config == sweep.config else f"run {run.name!r}: config"
        raise SweepError(f"{sweep.path}: {what}={run.config!r} does not load (from {cwd}): {e}") from e
    _check_keys(sweep, run, bases[run.config])
    try:
      parse_run_config(run, extra, cwd)
    except Exception as e:
      raise SweepError(f"{sweep.path}: run {run.name!r}: the overrides do not parse: {e}") from e


def parse_run_config(run: Run, extra: Sequence[str] = (), cwd: str | None = None):
  """The locked config a run starts with: its base config, its settings, then the --config.* items of
  `extra`, parsed as bert_jax.main parses them (from `cwd`, the folder the run starts in)."""
  args = [f"--config.{k}={format_value(v)}" for k, v in run.settings.items()]
  args += [a for a in extra if a.startswith("--config.")]
  return _parse_config(run.config, args, os.path.abspath(cwd or os.getcwd()))


def _check_keys(sweep: Sweep, run: Run, base) -> None:
  """Every override names a field of the base config; a misspelling gets the closest field's name."""
  for key in run.settings:
    node, parts = base, key.split(".")
    for depth, part in enumerate(parts):
      if not hasattr(node, "keys") or part not in node:
        siblings = list(node.keys()) if hasattr(node, "keys") else []
        close = difflib.get_close_matches(part, siblings, n=1)
        hint = f"; did you mean {'.'.join(parts[:depth] + close)!r}?" if close else ""
        raise SweepError(
          f"{sweep.path}: run {run.name!r}: override {key!r}: {run.config} has no field "
          f"{'.'.join(parts[: depth + 1])!r}{hint}"
        )
      node = node[part]


# --- the study folder --------------------------------------------------------------------------


def read_state(root: str) -> dict:
  """ROOT/sweep.json, the runner's record of each run (status, return code, arguments); empty if none."""
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


def read_run_metrics(path: str) -> list[dict]:
  """A run's metrics.jsonl records; none while the run has not logged yet."""
  return summaries.read_metrics(path) if os.path.exists(path) else []


def _unfinished_finetune(run_dir: str, config: dict | None) -> str | None:
  """Why a fine-tuning job that exited 0 has not finished, or None: a run stopped by SIGTERM (or the runtime's
  preemption notice) saves a checkpoint and exits 0 without result.json; a grid (its runs in lr{LR}_seed{SEED}/)
  writes summary.json only once every run has finished."""
  if config is not None:
    if config.get("job") != "finetune" or os.path.exists(os.path.join(run_dir, "result.json")):
      return None
    return "stopped before its end (no result.json): run it again to resume from its checkpoint"
  grid = [
    name
    for name in (os.listdir(run_dir) if os.path.isdir(run_dir) else [])
    if re.fullmatch(r"lr[^_/]+_seed\d+", name) and os.path.exists(os.path.join(run_dir, name, "config.json"))
  ]
  if not grid or os.path.exists(os.path.join(run_dir, "summary.json")):
    return None
  done = sum(os.path.exists(os.path.join(run_dir, name, "result.json")) for name in grid)
  return (
    f"the fine-tuning grid stopped before its end ({done} of the {len(grid)} runs started have result.json, "
    "no summary.json): run it again to resume"
  )


def incomplete(run_dir: str) -> str | None:
  """Why a pretraining or fine-tuning run that exited 0 has not finished (SIGTERM saves and exits 0), or None."""
  try:
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError):
    config = None
  stopped = _unfinished_finetune(run_dir, config)
  if stopped or config is None:
    return stopped
  if config.get("job") != "pretrain" or not isinstance(config.get("total_steps"), int):
    return None
  metrics_path = os.path.join(run_dir, summaries.METRICS_FILE)
  steps = [r["step"] for r in read_run_metrics(metrics_path) if "train/loss" in r]
  reached = max(steps, default=0)
  if reached < config["total_steps"]:
    return f"stopped at step {reached} of {config['total_steps']}"
  return None
