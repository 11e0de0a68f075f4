"""A paper table gathered from its task folders (ROOT/TASK) into ROOT/table.md and ROOT/table.json.

Each task's runs are the folders its configuration implies (a grid's ROOT/TASK/lr{LR}_seed{SEED}, or ROOT/TASK
itself for one run), each read from its result.json. A task counts only when every one of its runs finished and
each run's saved config.json matches the configuration the table expects (parsed from the table's entry, its
--seeds and --config items as bert_jax.main parses them): a missing, unfinished or differently configured run
shows its status in the table and is never averaged. Where a run reads its data and model from, how it is
meshed and how often it logs do not count as configuration; every other field present in both does, and every
run of a task must have fine-tuned the same model on the same files.

A row's numbers, in the paper's units: the mean ± sample std over seeds at the learning rate whose mean is best
on dev (by the task's selection metric), the single run best on dev (the paper's pick among its learning rates
and restarts), and the gap between the mean and the paper's dev number where the paper gives one.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

from bert_jax import files
from bert_jax.finetune_summary import choose_run, summarize
from bert_jax.sweep_spec import SweepError, parse_run_config, read_state

# Config fields that say where a run reads and writes, or how it runs, not what it measures.
WHERE = (
  "init_from",
  "model_config",
  "data.task_dir",
  "data.tfds_data_dir",
  "data.train",
  "data.validation",
  "data.eval_files",
)
HOW = ("mesh", "log_every", "checkpoint_every", "keep_checkpoints", "eval_batch_size")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _ignored(key: str) -> bool:
  return any(key == k or key.startswith(k + ".") for k in WHERE + HOW)


def config_differences(expected: dict, saved: dict) -> list[str]:
  """'field=ran (the table expects X)' for each configuration field where a run's config.json differs."""
  want, got = _flatten(expected), _flatten(saved)
  return [
    f"{k}={got[k]!r} (the table expects {want[k]!r})"
    for k in sorted(want.keys() & got.keys())
    if not _ignored(k) and want[k] != got[k]
  ]


def _split(value) -> list[str]:
  return [p.strip() for p in str(value).split(",") if p.strip()]


def run_folders(expected: dict, task_dir: str) -> list[tuple[float | None, int | None, str]]:
  """(learning rate, seed, folder) of every run a task's configuration implies (finetune.py's layout)."""
  if "learning_rates" not in expected:  # not a fine-tuning grid: one job in the task's folder
    return [(None, None, task_dir)]
  lrs = [float(v) for v in _split(expected["learning_rates"])] or [
    float(expected["optimizer"]["learning_rate"])
  ]
  seeds = [int(v) for v in _split(expected["seeds"])] or [int(expected["seed"])]
  if len(lrs) == 1 and len(seeds) == 1:
    return [(lrs[0], seeds[0], task_dir)]
  return [(lr, s, os.path.join(task_dir, f"lr{lr:g}_seed{s}")) for lr in lrs for s in seeds]


def _read_json(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_run(path: str) -> dict[str, Any]:
  """One run's status (finished | unfinished | missing | unreadable), reported metrics and saved config."""
  run: dict[str, Any] = {"path": path, "status": "missing", "metrics": {}, "config": None}
  try:
    if os.path.exists(os.path.join(path, "config.json")):
      run["config"] = _read_json(os.path.join(path, "config.json"))
    result_path = os.path.join(path, "result.json")
    if os.path.exists(result_path):
      result = _read_json(result_path)
      if result.get("preempted"):
        run.update(status="unfinished", detail=f"stopped at step {result.get('step')}")
      else:
        best = result["best"] if isinstance(result.get("best"), dict) else result
        metrics = {
          k: float(v) for k, v in best.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        run.update(status="finished", metrics=metrics)
    elif run["config"] is not None or any(
      os.path.exists(os.path.join(path, n)) for n in ("metrics.jsonl", "checkpoints")
    ):
      run["status"] = "unfinished"
  except (OSError, ValueError, KeyError) as e:
    run.update(status="unreadable", detail=f"{e}")
  return run


def _same_path(a: str, b: str) -> bool:
  return os.path.abspath(os.path.expanduser(a)) == os.path.abspath(os.path.expanduser(b))


def _path_key(value) -> str:
  """A config path value in one spelling (relative or absolute, ~); empty stays empty, lists stay as given."""
  if not isinstance(value, str) or not value or "," in value:
    return repr(value)
  return os.path.abspath(os.path.expanduser(value))


def _mismatches(expected: dict, runs: list[dict], model: str | None) -> list[str]:
  """Why the task's finished or started runs are not the table's configuration (empty: they are)."""
  out = []
  for run in runs:
    if run["config"] is not None:
      out += [
        f"{os.path.basename(run['path']) or run['path']}: {d}"
        for d in config_differences(expected, run["config"])
      ]
  models = sorted({r["config"].get("init_from", "") for r in runs if r["config"] is not None})
  if len(models) > 1 and len({os.path.abspath(m) for m in models}) > 1:
    out.append(f"the runs fine-tuned different models: {models}")
  # Where the data came from is not compared with the table's (the same files may sit elsewhere on each
  # machine), but the runs of one task must all have read the same data: one grid job writes them all alike.
  for field in WHERE[1:]:
    values = {_flatten(r["config"]).get(field) for r in runs if r["config"] is not None}
    if len({_path_key(v) for v in values}) > 1:
      out.append(f"the runs read different files: {field} {sorted(map(str, values))}")
  if model and models and not all(_same_path(m, model) for m in models):
    out.append(f"init_from={models} (gathered for --model {model})")
  return out


def _stats(expected: dict, runs: list[tuple], metrics_of: list[dict]) -> dict[str, Any]:
  """Mean ± std per learning rate, the learning rate whose mean is best on dev, and the best single run."""
  key = str(expected.get("best_metric", "")).removeprefix("eval/")
  mode = expected.get("best_mode", "max")
  results = [
    {"learning_rate": lr if lr is not None else 0.0, "seed": seed if seed is not None else 0, "best": m}
    for (lr, seed, _), m in zip(runs, metrics_of)
  ]
  summary = summarize(results)
  sign = 1.0 if mode == "max" else -1.0
  lrs = list(summary)
  if key and all(key in summary[lr] for lr in lrs):
    best_lr = max(lrs, key=lambda lr: (sign * summary[lr][key]["mean"], -lrs.index(lr)))
  else:
    best_lr = lrs[0]
  pick = choose_run(results, f"eval/{key}", mode) if key and all(key in r["best"] for r in results) else None
  return {"selection_metric": key, "summary": summary, "best_lr": best_lr, "pick": pick}


def gather_task(run, root: str, extra: Sequence[str], recorded: dict, model: str | None) -> dict[str, Any]:
  """One task of the table: its runs' statuses and, when all finished as configured, its statistics."""
  task_dir = os.path.join(root, run.name)
  task: dict[str, Any] = {"path": task_dir, "status": "ok", "detail": "", "runs": []}
  if recorded.get("status") not in (None, "ok"):
    task["sweep_record"] = f"{recorded['status']}" + (
      f": {recorded['error']}" if recorded.get("error") else ""
    )
  try:
    expected = json.loads(parse_run_config(run, extra).to_json())
  except Exception as e:  # noqa: BLE001  (a config file this checkout lacks, overrides that no longer parse: shown)
    task.update(status="unchecked", detail=f"the table's configuration does not load: {e}")
    return task
  folders = run_folders(expected, task_dir)
  runs = [dict(read_run(path), learning_rate=lr, seed=seed) for lr, seed, path in folders]
  task["runs"] = [{k: r.get(k) for k in ("path", "status", "learning_rate", "seed", "detail")} for r in runs]
  task["models"] = sorted({r["config"].get("init_from", "") for r in runs if r["config"] is not None})
  mismatches = _mismatches(expected, runs, model)
  finished = [r for r in runs if r["status"] == "finished"]
  if mismatches:
    task.update(
      status="config mismatch", detail="; ".join(mismatches[:5]) + (" ..." if len(mismatches) > 5 else "")
    )
  elif len(finished) < len(runs):
    by_status: dict[str, list[str]] = {}
    for r in runs:
      if r["status"] != "finished":
        by_status.setdefault(r["status"], []).append(os.path.relpath(r["path"], root))
    listed = "; ".join(f"{s}: {', '.join(p[:4])}{' ...' if len(p) > 4 else ''}" for s, p in by_status.items())
    task.update(status="incomplete", detail=f"{len(finished)} of {len(runs)} runs finished; {listed}")
  else:
    task.update(_stats(expected, folders, [r["metrics"] for r in runs]))
  return task


def _row(ref: dict, task: dict) -> dict[str, Any]:
  """A reference row with what was measured (only from a task whose runs are all finished as configured)."""
  row = dict(ref, status=task["status"], detail=task.get("detail", ""), path=task["path"])
  if task["status"] != "ok":
    return row
  per = task["summary"][task["best_lr"]]
  metric, scale = ref["metric"], ref["scale"]
  if metric not in per:
    reported = sorted(per)
    row.update(status="not reported", detail=f"the runs report no {metric!r}; they report {reported}")
    return row
  row.update(
    mean=per[metric]["mean"] * scale,
    std=per[metric]["std"] * scale,
    n=per[metric]["n"],
    learning_rate=task["best_lr"],
    selection_metric=task["selection_metric"],
  )
  pick = task.get("pick")
  if pick is not None and metric in pick["metrics"]:
    row.update(pick=pick["metrics"][metric] * scale, pick_lr=pick["learning_rate"], pick_seed=pick["seed"])
  # The paper's number on the set the metric is measured on (dev; CoNLL-2003's test row: its eng.testb).
  paper_number = ref[ref.get("split", "dev")]
  if paper_number is not None:
    row["gap"] = row["mean"] - paper_number
  return row


def gather(
  table, root: str, extra: Sequence[str], model: str | None = None, any_model: bool = False, only=()
):
  """The table as a dict (what table.json holds): its tasks, its rows, the model measured."""
  from bert_jax.paper import check_model, config_item

  root = os.path.abspath(root)
  try:
    recorded = read_state(root)["runs"]
  except SweepError:
    recorded = {}
  runs = table.sweep.select(only)
  tasks = {r.name: gather_task(r, root, extra, recorded.get(r.name, {}), model) for r in runs}
  models = sorted({m for t in tasks.values() for m in t.get("models", [])})
  measured = model or (models[0] if len(models) == 1 else "")
  notes = []
  if not model and len(models) > 1:
    notes.append(f"the tasks fine-tuned different models: {models}")
  config_file = config_item(extra, "model_config")
  where = os.path.expanduser(measured)
  # A TF checkpoint prefix (.../model.ckpt-28252) exists as its .index file.
  if measured and (os.path.exists(where) or os.path.exists(where + ".index")):
    size, note = check_model(table, measured, any_model, config_file)
  else:
    size, note = table.sizes[0], ""
    if not measured and not models:
      notes.append("no run has recorded its model yet")
  if note:
    notes.insert(0, note)
  rows = [_row(ref, tasks[ref["run"]]) for ref in table.references[size] if ref["run"] in tasks]
  # What the runs were told beyond the table's recipe (where they read and how they ran aside): a table says so.
  ignored = tuple(f"--config.{k}{end}" for k in WHERE + HOW for end in ("=", "."))
  changes = [a for a in extra if not a.startswith(ignored)]
  return {
    "table": table.name,
    "title": table.title + (f" - measured on {measured}, NOT the paper's model" if note else ""),
    "model": measured,
    "size": size,
    "notes": notes,
    "changes": changes,
    "target": table.target,
    "root": root,
    "gathered": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "rows": rows,
    "runs": tasks,
  }


# --- rendering -----------------------------------------------------------------------------------


def _num(value, digits: int) -> str:
  return "—" if value is None else f"{value:.{digits}f}"


def _digits(row: dict) -> int:
  # Fractions (MLPerf's 0.34085) to the digits their source gives; percentages to two.
  return 5 if row["scale"] == 1.0 and (row["dev"] or 0) < 1 else 2


def _measured_cells(row: dict) -> list[str]:
  d = _digits(row)
  if "mean" not in row:
    return ["—", "—", "—", "—", "—"]
  pick = "—"
  if "pick" in row:
    pick = f"{row['pick']:.{d}f} (lr {row['pick_lr']:g}, seed {row['pick_seed']})"
  lr = "—" if row["learning_rate"] in ("0", 0) else str(row["learning_rate"])
  gap = "—" if "gap" not in row else f"{row['gap']:+.{d}f}"
  return [f"{row['mean']:.{d}f} ± {row['std']:.{d}f}", str(row["n"]), lr, pick, gap]


def _table_lines(rows: list[dict], root: str) -> list[str]:
  lines = [
    (
      "| row | paper dev | paper test | measured (mean ± std) | seeds | lr | best run on dev | gap to paper "
      "| status | runs |"
    ),
    "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
  ]
  for row in rows:
    d = _digits(row)
    cells = [row["name"], _num(row["dev"], d), _num(row["test"], d), *_measured_cells(row), row["status"]]
    cells.append(f"`{os.path.relpath(row['path'], root)}`")
    lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
  return lines


def render(gathered: dict) -> str:
  rows = [r for r in gathered["rows"] if not r["apart"]]
  apart = [r for r in gathered["rows"] if r["apart"]]
  size = gathered["size"]
  lines = [
    f"# {gathered['title']}",
    "",
    (
      f"Model measured: `{gathered['model'] or 'unknown'}`; the paper's numbers are BERT-{size}'s. "
      f"Runs under `{gathered['root']}`, gathered {gathered['gathered']}."
    ),
    "",
    (
      "Measured: the row's metric on dev (on the test set where the row's name says test), mean ± sample std "
      "over seeds at the learning rate whose mean is best on dev (the task's selection metric); best run: the "
      "single run best on dev, as the paper picked among learning rates and restarts. Paper test numbers are "
      "test-set scores (GLUE: the evaluation server), shown beside dev, never as dev; the gap is the measured "
      "mean minus the paper's number on the same set. A task whose runs are missing, unfinished or of another "
      "configuration shows its status and no number."
    ),
    "",
  ]
  lines += [f"**Note:** {n}." for n in gathered["notes"]] + ([""] if gathered["notes"] else [])
  if gathered.get("changes"):
    items = " ".join(f"`{c}`" for c in gathered["changes"])
    lines += [f"**Changed from the table's recipe** (these runs are not the paper's setting): {items}", ""]
  lines += _table_lines(rows, gathered["root"])
  if apart:
    lines += [
      "",
      "## Reported apart",
      "",
      "The paper left these out of its table (WNLI: see the source).",
      "",
    ]
    lines += _table_lines(apart, gathered["root"])
  if gathered["target"]:
    lines += ["", gathered["target"]]
  problems = [
    (name, t) for name, t in gathered["runs"].items() if t["status"] != "ok" or t.get("sweep_record")
  ]
  if problems:
    lines += ["", "## Tasks not finished as configured", ""]
    for name, t in problems:
      record = f" (sweep record: {t['sweep_record']})" if t.get("sweep_record") else ""
      lines.append(f"- {name}: {t['status']}: {t['detail']}{record}")
  lines += ["", "## Sources", ""]
  lines += [f"- {r['name']}: {r['source']} (checked: {r['checked']})" for r in gathered["rows"]]
  return "\n".join(lines) + "\n"


def write(gathered: dict, root: str) -> tuple[str, str]:
  """ROOT/table.md and ROOT/table.json; returns their paths."""
  md, js = os.path.join(root, "table.md"), os.path.join(root, "table.json")
  files.write_text(md, render(gathered))
  files.write_json(js, gathered)
  return md, js
