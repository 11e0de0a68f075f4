"""Fine-tuning runner: `finetune_and_evaluate(config, workdir)` for configs/finetune.py.

A run: the pretrained encoder from `config.init_from` (a HuggingFace / Google / bert_jax folder, or a
bert_jax pretraining workdir, whose `export/` it reads) -> the task's data (data/finetune_data.py) ->
the task head (models/heads.py) -> epochs of shuffled batches with the task's optimizer (BERT's `bert_adamw` and
schedule for the paper's tasks; optional layer-wise learning-rate decay) -> evaluation in the task's official metric
after every epoch (finetune_eval.py) -> the reported epoch's weights (the best, or with config.selection=paper the
last) exported to `workdir/export/` for the Predictor.

Several learning rates and seeds in one command (`config.learning_rates`, `config.seeds`) run one
after another in `workdir/lr{LR}_seed{SEED}/`; `summary.md` / `summary.json` give mean ± std per
learning rate, because small GLUE sets swing by points between seeds, and the paper's pick (finetune_summary.py).

Data order is a function of (seed, epoch) alone (finetune_batches.py), so a resumed run (workdir
checkpoint, e.g. after a preemption) continues with exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np

from bert_jax import (
  checkpointing,
  distributed,
  files,
  sharding,
  summaries,
  train_state,
)
from bert_jax.data import finetune_data, packing
from bert_jax.finetune_batches import (  # noqa: F401  (re-exported: finetune.X is where callers find them)
  PACKABLE,
  check_packing,
  epoch_order,
  pack_rows,
  take_rows,
)
from bert_jax.finetune_eval import (  # noqa: F401  (re-exported, as above)
  OUTPUT_KEYS,
  _predict_full_rows,
  evaluate_all,
  make_predict_step,
  predict_outputs,
  score,
)
from bert_jax.finetune_model import (  # noqa: F401  (re-exported, as above)
  EXPORT_DIR,
  MODEL_OVERRIDES,
  Shared,
  _init_params,
  _num_labels,
  build_task,
  load_encoder,
  resolve_init_from,
  task_info,
)
from bert_jax.finetune_summary import choose_run, summarize, summary_markdown  # noqa: F401  (re-exported)
from bert_jax.run_control import (
  Preemption,
  TrainingError,
  check_finite,
  eta,
  from_primary,
  host_metrics,
  host_tree,
  should_stop,
)

log = logging.getLogger("bert_jax.finetune")


# --- the best evaluation -----------------------------------------------------------------------


def _last_eval(history: list[dict]) -> dict:
  rows = [r for r in history if any(k.startswith("eval/") for k in r)]
  return {k: v for k, v in rows[-1].items() if k.startswith("eval/")} if rows else {}


def _agree_on_best(best: dict | None) -> dict:
  """Process 0's best step on every process (only process 0 read the evaluations logged before a resume)."""
  step = int(from_primary(np.int64(best["step"] if best else -1)))
  return best if best is not None and best["step"] == step else {"step": step}


SELECTIONS = ("best_epoch", "paper")


def check_selection(config) -> None:
  if config.selection not in SELECTIONS:
    raise ValueError(f"config.selection={config.selection!r}; choices: {list(SELECTIONS)}")


def _reported(history: list[dict], config) -> dict | None:
  """The evaluation a run reports: its best epoch (selection=best_epoch), or the one at the end of training
  (selection=paper: the BERT paper evaluated the fine-tuned model as it ended)."""
  if config.selection == "paper":
    rows = [row for row in history if config.best_metric in row]
    return rows[-1] if rows else None
  return _best(history, config.best_metric, config.best_mode)


def _best(history: list[dict], metric: str, mode: str) -> dict | None:
  """The best evaluation; on a tie the latest, as Orbax's BestN keeps the latest of equal checkpoints."""
  best = None
  for row in history:
    if metric not in row:
      continue
    value = row[metric] if mode == "max" else -row[metric]
    if best is None or value >= best[0]:
      best = (value, row)
  return None if best is None else best[1]


# --- one run: set-up and restore ---------------------------------------------------------------


@dataclasses.dataclass
class _Setup:
  """What one run of the grid (one learning rate, one seed) builds before its first step."""

  workdir: str
  primary: bool
  learning_rate: float
  seed: int
  mesh: Any
  rules: Any
  steps_per_epoch: int
  total_steps: int
  task: train_state.Trainable


def _set_up(config, workdir: str, learning_rate: float, seed: int, shared: Shared) -> _Setup:
  """Mesh, run length, and the task model with its optimizer; batch sizes the mesh does not divide, packing
  the task cannot take and a training set smaller than a batch fail first."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  primary = distributed.is_primary()
  data, bert = shared.data, shared.bert
  mesh, rules = sharding.from_config(config.mesh)
  accumulation = config.optimizer.accumulation_steps
  sharding.check_batch(config.batch_size, mesh, accumulation_steps=accumulation)
  sharding.check_batch(config.eval_batch_size, mesh)
  check_packing(config, data.kind)
  steps_per_epoch = data.num_train // config.batch_size
  if not steps_per_epoch:
    raise ValueError(
      f"{data.num_train} training examples are fewer than config.batch_size={config.batch_size}"
    )
  total_steps = steps_per_epoch * config.epochs
  task = build_task(config, bert, data.kind, _num_labels(data), learning_rate, total_steps, mesh, rules)
  return _Setup(workdir, primary, learning_rate, seed, mesh, rules, steps_per_epoch, total_steps, task)


def _open_checkpointer(config, workdir: str) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    max_to_keep=config.keep_checkpoints,
    best_metric=config.best_metric,
    best_mode=config.best_mode,
  )


def _target(setup: _Setup):
  return checkpointing.abstract_target(setup.task.abstract, setup.task.shardings)


def _restore_or_init(setup: _Setup, ckpt: checkpointing.Checkpointer, shared: Shared):
  """(state, its step, where it came from): a checkpoint in workdir, else the pretrained encoder under a
  freshly initialised head."""
  if ckpt.latest_step() is not None:
    start_step, state = ckpt.restore(_target(setup))
    return state, start_step, f"checkpoint {start_step} in {ckpt.directory}"
  task = setup.task
  state, _ = train_state.create_train_state(
    task.model, task.tx, setup.mesh, setup.rules, seed=setup.seed, shardings=task.shardings
  )
  return _init_params(state, shared), 0, f"config.init_from={shared.init_from}"


def _open_metrics(config, setup: _Setup, start_step: int) -> tuple[summaries.MetricWriter, list[dict]]:
  """The metric writer, the evaluations logged before a resume (as process 0 logged them: its decisions are
  broadcast to the others), and config.json."""
  writer = summaries.MetricWriter(setup.workdir, enabled=setup.primary, resume_step=start_step)
  history = summaries.read_metrics(writer.path) if setup.primary and os.path.exists(writer.path) else []
  if setup.primary:
    files.write_json(os.path.join(setup.workdir, "config.json"), json.loads(config.to_json()))
    if start_step < setup.total_steps:  # a result.json left by an earlier run is not this run's (yet)
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(setup.workdir, "result.json"))
  return writer, history


def _announce_start(config, setup: _Setup, data, start_step: int, source: str) -> None:
  if setup.primary:
    print(
      f"fine-tune {config.task} ({data.kind}): {data.num_train} examples, {config.epochs} epochs x "
      f"{setup.steps_per_epoch} steps, batch {config.batch_size}, lr {setup.learning_rate:g}, "
      f"seed {setup.seed}; start step {start_step} from {source}",
      flush=True,
    )


# --- one run: the loop -------------------------------------------------------------------------


@dataclasses.dataclass
class _Loop:
  """One run's loop state across steps and epochs, its steps, and where it writes."""

  config: Any
  setup: _Setup
  shared: Shared
  ckpt: checkpointing.Checkpointer
  writer: summaries.MetricWriter
  history: list[dict]  # evaluations, this run's and (on process 0) those logged before a resume
  train_step: Any
  predict_step: Any
  rows: Any  # this process's rows of an unpacked batch
  per_row: int | None  # examples per packed row (fixed for the run), None unpacked
  state: Any
  step: int
  best_host: tuple | None = None  # (step, params on the host) of the best evaluation seen by this process
  train_seconds: float = 0.0
  real_tokens: int = 0
  last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
  window_start: float = dataclasses.field(default_factory=time.perf_counter)
  window_steps: int = 0
  window_tokens: int = 0
  order_epoch: int = -1
  order: np.ndarray | None = None  # order_epoch's example order


def _packed_per_row(config, data) -> int | None:
  if not config.data.packing:
    return None
  length = data.train["input_ids"].shape[1]
  # Fixed for the run (one shape per row count): as many examples as the shortest allows, at most a batch.
  return min(config.batch_size, packing.per_row_limit(data.train["attention_mask"].sum(1), length))


def _train(loop: _Loop, preemption: Preemption) -> bool:
  """Runs the remaining steps, logging, evaluating after each epoch and checkpointing; True when the run
  must stop (SIGTERM or the runtime's preemption notice), its checkpoint saved."""
  config, setup = loop.config, loop.setup
  while loop.step < setup.total_steps:
    epoch, batch, tokens = _next_batch(loop)
    loop.state, step_metrics = loop.train_step(loop.state, batch)
    loop.step += 1
    loop.window_steps += 1
    loop.window_tokens += tokens
    if loop.step % config.log_every == 0 or loop.step % setup.steps_per_epoch == 0:
      _log_progress(loop, epoch, step_metrics)
    end_of_epoch = loop.step % setup.steps_per_epoch == 0
    if end_of_epoch:
      _evaluate_epoch(loop)
    stop = should_stop(preemption, loop.ckpt, loop.step)
    if end_of_epoch or stop or loop.step % config.checkpoint_every == 0:
      _save(loop, step_metrics, end_of_epoch)
    if stop:
      return True
  return False


def _next_batch(loop: _Loop):
  """(epoch, this step's global batch, its real tokens): rows in the epoch's order, packed if asked."""
  config, data, mesh = loop.config, loop.shared.data, loop.setup.mesh
  epoch, index = divmod(loop.step, loop.setup.steps_per_epoch)
  if epoch != loop.order_epoch:
    loop.order_epoch, loop.order = epoch, epoch_order(data.num_train, loop.setup.seed, epoch)
  batch_rows = loop.order[index * config.batch_size : (index + 1) * config.batch_size]
  batch = take_rows(data.train, batch_rows)
  tokens = int(batch["attention_mask"].sum())
  step_rows = loop.rows
  if config.data.packing:
    batch = pack_rows(batch, data.kind, loop.per_row, sharding.data_parallel_size(mesh)).batch
    step_rows = sharding.process_rows(mesh, len(batch["input_ids"]))
  return epoch, sharding.global_batch({k: v[step_rows] for k, v in batch.items()}, mesh), tokens


def _log_progress(loop: _Loop, epoch: int, step_metrics) -> None:
  """Checks the step's metrics, writes them with the window's throughput, prints the progress line, and
  starts a new window."""
  config, step, total_steps = loop.config, loop.step, loop.setup.total_steps
  host = host_metrics(step_metrics)
  check_finite(host, step)
  elapsed = time.perf_counter() - loop.window_start
  loop.train_seconds += elapsed
  loop.real_tokens += loop.window_tokens
  host["examples_per_second"] = loop.window_steps * config.batch_size / max(elapsed, 1e-9)
  host["real_tokens_per_second"] = loop.window_tokens / max(elapsed, 1e-9)
  loop.writer.write(step, {f"train/{k}": v for k, v in host.items()})
  if loop.setup.primary:
    print(
      f"step {step}/{total_steps} (epoch {epoch + 1}) | loss {host['loss']:.4f} | "
      f"{host['examples_per_second']:.1f} examples/s | "
      f"{host['real_tokens_per_second']:,.0f} real tokens/s | "
      f"ETA {eta((total_steps - step) * elapsed / max(loop.window_steps, 1))}",
      flush=True,
    )
  loop.window_start, loop.window_steps, loop.window_tokens = time.perf_counter(), 0, 0


def _evaluate_epoch(loop: _Loop) -> None:
  """Evaluates, logs, and keeps the parameters on the host when this is the best evaluation so far (so
  the export needs no restore). Evaluation time is not training time: the window leaves it out."""
  config, step = loop.config, loop.step
  epoch = step // loop.setup.steps_per_epoch
  paused = time.perf_counter()
  loop.last_eval = evaluate_all(
    config, loop.shared.data, loop.predict_step, loop.state.params, loop.setup.mesh
  )
  record = {f"eval/{k}": v for k, v in loop.last_eval.items()}
  loop.writer.write(step, dict(record, epoch=epoch))
  loop.history.append(dict(record, step=step))
  if loop.setup.primary:
    print(
      f"eval after epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(loop.last_eval.items())),
      flush=True,
    )
  if config.best_metric not in record:
    raise TrainingError(
      f"config.best_metric={config.best_metric!r} is not among the evaluation's metrics {sorted(record)}"
    )
  best = _best(loop.history, config.best_metric, config.best_mode)
  if from_primary(best is not None and best["step"] == step):
    loop.best_host = (step, host_tree(loop.state.params))
  loop.window_start += time.perf_counter() - paused


def _save(loop: _Loop, step_metrics, end_of_epoch: bool) -> None:
  """A checkpoint (ranked by the epoch's evaluation at an epoch's end); the window leaves its time out."""
  check_finite(host_metrics(step_metrics), loop.step)  # never save a NaN state over the last good one
  paused = time.perf_counter()
  loop.ckpt.save(
    loop.step,
    loop.state,
    config=json.loads(loop.config.to_json()),
    metrics={f"eval/{k}": v for k, v in loop.last_eval.items()} if end_of_epoch else None,
    force=True,
  )
  loop.window_start += time.perf_counter() - paused


# --- one run: the end --------------------------------------------------------------------------


def _stop_preempted(loop: _Loop) -> dict[str, Any]:
  loop.ckpt.wait()
  loop.writer.close()
  loop.ckpt.close()
  if loop.setup.primary:
    print(f"stopped by SIGTERM at step {loop.step}; checkpoint saved in {loop.ckpt.directory}", flush=True)
  return {"preempted": True, "step": loop.step}


def _agreed_best(loop: _Loop) -> dict:
  """The best evaluation, as process 0 saw it, on every process."""
  best = _reported(loop.history, loop.config)
  if loop.setup.primary and best is None:
    raise TrainingError(
      f"no evaluation reported {loop.config.best_metric!r}; metrics seen: {sorted(loop.last_eval)}"
    )
  return _agree_on_best(best)


def _best_params(loop: _Loop, best: dict) -> dict:
  """The best step's parameters on the host, unscanned: kept from its evaluation, else restored."""
  best_host = loop.best_host
  if best_host is None or best_host[0] != best["step"]:
    _, best_state = loop.ckpt.restore(_target(loop.setup), step=best["step"], fall_back=False)
    best_host = (best["step"], host_tree(best_state.params))
  params = best_host[1]
  bert = loop.shared.bert
  if bert.scan_layers:
    from bert_jax.models import unscan_params

    params = unscan_params(params, bert.num_layers)
  return params


def _export_best(loop: _Loop, best: dict, params: dict) -> None:
  """The best epoch's model, with what the Predictor needs to know of the task, in workdir/export."""
  config, shared = loop.config, loop.shared
  extra = {"best_step": best["step"], "best": {k: v for k, v in best.items() if k != "step"}}
  if shared.data.kind == "span" and config.squad.version_2 and "eval/best_f1_thresh" in best:
    extra["tuned_null_score_diff_threshold"] = best["eval/best_f1_thresh"]
  if loop.setup.primary:
    from bert_jax.predict import save_task_model

    save_task_model(
      os.path.join(loop.setup.workdir, EXPORT_DIR),
      shared.bert.replace(scan_layers=False),
      params,
      shared.tokenizer,
      task_info(config, shared.data, shared.bert, extra),
    )


def _finish(loop: _Loop) -> dict[str, Any]:
  """Waits for the last checkpoint, exports the best epoch's weights, closes the files, writes result.json."""
  loop.ckpt.wait()
  best = _agreed_best(loop)
  if not loop.last_eval:  # a rerun of a finished run: report the last evaluation it logged
    loop.last_eval = {k[len("eval/") :]: v for k, v in _last_eval(loop.history).items()}
  _export_best(loop, best, _best_params(loop, best))
  loop.writer.close()
  loop.ckpt.close()
  result = {
    "preempted": False,
    "step": loop.step,
    "best_step": best["step"],
    "selection": loop.config.selection,
    "best": {k[len("eval/") :]: v for k, v in best.items() if k.startswith("eval/")},
    "final": loop.last_eval,
    "train_seconds": loop.train_seconds,
    "real_tokens_per_second": loop.real_tokens / loop.train_seconds if loop.train_seconds else None,
    "export": os.path.join(loop.setup.workdir, EXPORT_DIR),
  }
  if loop.setup.primary:
    files.write_json(os.path.join(loop.setup.workdir, "result.json"), result)
    print(
      f"done: best {loop.config.best_metric} {best[loop.config.best_metric]:.4f} at step {best['step']}; "
      f"model exported to {result['export']}",
      flush=True,
    )
  return result


# --- one run -----------------------------------------------------------------------------------


def run_one(config, workdir: str, learning_rate: float, seed: int, shared: Shared) -> dict[str, Any]:
  """One run of the grid (this learning rate and seed) in workdir; returns its best and final evaluations."""
  # Set-up: mesh, run length, the task model and its optimizer.
  setup = _set_up(config, workdir, learning_rate, seed, shared)

  # Restore or start: a checkpoint in workdir, else the pretrained encoder under a fresh head.
  ckpt = _open_checkpointer(config, setup.workdir)
  state, start_step, source = _restore_or_init(setup, ckpt, shared)

  # Metrics, the evaluations logged before a resume, config.json.
  writer, history = _open_metrics(config, setup, start_step)
  _announce_start(config, setup, shared.data, start_step, source)

  # The steps: training, and prediction for the evaluations.
  task, mesh, rules = setup.task, setup.mesh, setup.rules
  train_step = task.train_step(mesh, rules, config.optimizer.accumulation_steps)
  predict_step = make_predict_step(task.model, shared.data.kind, mesh, rules, task.shardings.params)
  rows = sharding.process_rows(mesh, config.batch_size)
  per_row = _packed_per_row(config, shared.data)
  loop = _Loop(
    config, setup, shared, ckpt, writer, history, train_step, predict_step, rows, per_row, state, start_step
  )

  # The loop: epochs of shuffled batches, an evaluation after each, checkpoints; SIGTERM saves and stops.
  with Preemption() as preemption:
    if _train(loop, preemption):
      return _stop_preempted(loop)

  # Export: the best epoch's weights for the Predictor, result.json.
  return _finish(loop)


# --- grids of learning rates and seeds -----------------------------------------------------------


def finetune_and_evaluate(config, workdir: str) -> dict[str, Any]:
  learning_rates = [float(v) for v in finetune_data.split_list(config.learning_rates)] or [
    config.optimizer.learning_rate
  ]
  seeds = [int(v) for v in finetune_data.split_list(config.seeds)] or [config.seed]
  check_selection(config)
  init_from, loaded = load_encoder(config)
  data = finetune_data.load_task_data(config, loaded.tokenizer)
  shared = Shared(init_from, loaded.config, jax.device_get(loaded.params["bert"]), loaded.tokenizer, data)
  if distributed.is_primary():
    print(
      f"bert_jax fine-tune: {loaded.config.num_layers} layers, hidden {loaded.config.hidden_size} from "
      f"{init_from}; task {config.task} ({data.kind}), {data.num_train} training examples, eval sets "
      f"{[(e.name, len(e.features['input_ids'])) for e in data.evals]}",
      flush=True,
    )
  if len(learning_rates) == 1 and len(seeds) == 1:
    return run_one(config, workdir, learning_rates[0], seeds[0], shared)
  results = []
  for lr in learning_rates:
    for seed in seeds:
      result = run_one(config, os.path.join(workdir, f"lr{lr:g}_seed{seed}"), lr, seed, shared)
      if result["preempted"]:
        return result
      results.append(dict(result, learning_rate=lr, seed=seed))
  summary = summarize(results)
  # Only process 0 read the evaluations of runs finished before a resume: it alone chooses (and writes).
  paper = config.selection == "paper" and distributed.is_primary()
  chosen = choose_run(results, config.best_metric, config.best_mode) if paper else None
  out = {"runs": results, "summary": summary, "selection": config.selection, "chosen": chosen}
  if distributed.is_primary():
    files.write_json(os.path.join(workdir, "summary.json"), out)
    table = summary_markdown(config.task, summary, config.best_metric, config.selection, chosen)
    files.write_text(os.path.join(workdir, "summary.md"), table)
    print(table, flush=True)
  return {"preempted": False, **out}
