"""Sweep reports: each run's metrics.jsonl and the runner's record (ROOT/sweep.json) gathered into
results.md, results.csv and loss_curves.png; attention benchmark records into scaling.md and
scaling.png. `python -m bert_jax.sweeps report` calls these; they read local folders only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

from bert_jax import files, summaries
from bert_jax.sweep_spec import (
  REPORT_DIR,
  Run,
  Sweep,
  SweepError,
  format_value,
  incomplete,
  read_run_metrics,
  read_state,
)

FINAL_LOSS_WINDOW = 3  # final train loss = mean of the last this many logged values


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
  return [_result(run, os.path.join(root, run.name), recorded.get(run.name, {})) for run in sweep.runs]


def _result(run: Run, run_dir: str, recorded: dict) -> Result:
  """A run's Result from its metrics; `recorded` is its sweep.json entry ({} if the runner did not run it)."""
  status = recorded.get("status")
  error = recorded.get("error", "")
  try:
    records = read_run_metrics(os.path.join(run_dir, summaries.METRICS_FILE))
  except (OSError, ValueError) as e:
    records, status, error = [], "unreadable", f"metrics: {e}"
  losses = [v for _, v in _series(records, "train/loss")]
  eval_loss = _series(records, "eval/loss")
  eval_acc = [v for _, v in _series(records, "eval/mlm_accuracy")]
  speed = [v for _, v in _series(records, "train/tokens_per_second")]
  if status is None:  # not run by this runner (e.g. on a pod): judge by the metrics
    error = (incomplete(run_dir) or "") if records else "no metrics.jsonl"
    status = "missing" if not records else ("incomplete" if error else "ok")
  return Result(
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
  files.write_text(os.path.join(out, "results.csv"), _results_csv(results))
  files.write_text(os.path.join(out, "results.md"), _results_md(sweep, root, results))
  plot_runs(results, os.path.join(out, "loss_curves.png"))
  return results


def _results_csv(results: Sequence[Result]) -> str:
  keys = [k for k, _ in COLUMNS]
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(keys)
  for result in results:
    row = result.row()
    writer.writerow(["" if row[k] is None else row[k] for k in keys])
  return buffer.getvalue()


def _results_md(sweep: Sweep, root: str, results: Sequence[Result]) -> str:
  keys = [k for k, _ in COLUMNS]
  common = compact(sweep.common) if sweep.common else "none"
  return (
    f"# Sweep {os.path.basename(sweep.path)}\n\n"
    f"Base config `{sweep.config or 'each run names its own'}`; overrides for every run: `{common}`; runs in `{os.path.abspath(root)}`.\n"
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
  md_path = os.path.join(out, "scaling.md")
  header, rows = _scaling_table(records, attentions, lengths)
  files.write_text(
    md_path,
    "# Attention scaling\n\n"
    + (f"Records: {source}. " if source else "")
    + "ms: median time per layer; MiB: peak memory; a cell with words: the run's status; —: not measured.\n\n"
    + markdown_table(header, rows)
    + "\n![scaling](scaling.png)\n",
  )
  png_path = os.path.join(out, "scaling.png")
  _plot_scaling(records, attentions, lengths, png_path)
  return md_path, png_path


def _scaling_table(
  records: Sequence[dict], attentions: Sequence[str], lengths: Sequence[int]
) -> tuple[list[str], list[list[Any]]]:
  """(header, rows): a row per sequence length, ms and MiB columns per attention."""
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
  return header, rows


def _plot_scaling(
  records: Sequence[dict], attentions: Sequence[str], lengths: Sequence[int], path: str
) -> None:
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
  _save_figure(fig, path)
