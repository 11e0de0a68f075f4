"""Fine-tuning runner: `finetune_and_evaluate(config, workdir)` for configs/finetune.py.

A run: the pretrained encoder from `config.init_from` (a HuggingFace / Google / bert_jax folder, or a
bert_jax pretraining workdir, whose `export/` it reads) -> the task's data (data/finetune_data.py) ->
the task head (models/heads.py) -> epochs of shuffled batches with BERT's recipe (AdamW, warmup then
linear decay, optional layer-wise learning-rate decay) -> evaluation in the task's official metric after
every epoch -> the best epoch's weights exported to `workdir/export/` for the Predictor.

Several learning rates and seeds in one command (`config.learning_rates`, `config.seeds`) run one
after another in `workdir/lr{LR}_seed{SEED}/`; `summary.md` / `summary.json` give mean ± std per
learning rate, because small GLUE sets swing by points between seeds.

Data order is a function of (seed, epoch) alone, so a resumed run (workdir checkpoint, e.g. after a
preemption) continues with exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import (
  batching,
  checkpointing,
  distributed,
  files,
  hub,
  metrics,
  objectives,
  optim,
  sharding,
  summaries,
  train_state,
)
from bert_jax.data import finetune_data, packing, squad, tasks
from bert_jax.models import BertConfig, task_model
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

EXPORT_DIR = "export"
# Fields of config.model a fine-tuning run may change on the pretrained model's config.
MODEL_OVERRIDES = (
  "dropout_rate",
  "attention_dropout_rate",
  "dtype",
  "param_dtype",
  "scan_layers",
  "remat",
  "attention",
)


# --- the pretrained encoder --------------------------------------------------------------------


def resolve_init_from(path: str) -> str:
  """A checkpoint folder, or a bert_jax pretraining workdir (its final export)."""
  if not path:
    raise ValueError(
      "config.init_from is empty: fine-tuning starts from a pretrained checkpoint (a HuggingFace, Google "
      "or bert_jax folder, a bert_jax pretraining workdir, or hf://ORG/NAME on the HuggingFace Hub)"
    )
  if hub.is_hub(path):
    return hub.local_folder(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.init_from={path!r}: no such file or directory")
  export = os.path.join(path, EXPORT_DIR)
  if os.path.exists(os.path.join(export, "bert_jax_config.json")):
    return export
  if os.path.isdir(os.path.join(path, "checkpoints")):
    raise FileNotFoundError(
      f"config.init_from={path!r} is a bert_jax run without {EXPORT_DIR}/ (the runner writes it when "
      "pretraining finishes); let the run finish or point at an export folder"
    )
  return path


def load_encoder(config):
  from bert_jax.pretrained import from_pretrained

  path = resolve_init_from(config.init_from)
  overrides = {k: config.model[k] for k in MODEL_OVERRIDES}
  scan = overrides.pop("scan_layers")
  loaded = from_pretrained(path, heads=False, scan_layers=scan, **overrides)
  return path, loaded


# --- data order --------------------------------------------------------------------------------


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def _take(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
  return {k: v[rows] for k, v in arrays.items()}


def _pad_rows(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(next(iter(arrays.values())))
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in arrays.items()}
  out["valid"] = (np.arange(size) < n).astype(np.int32)
  return out


# --- evaluation --------------------------------------------------------------------------------


OUTPUT_KEYS = {"span": ("start_logits", "end_logits")}


# --- packing ---------------------------------------------------------------------------------

PACKABLE = ("classification", "regression", "tagging", "span")


def check_packing(config, kind: str) -> None:
  if not config.data.packing:
    return
  if kind not in PACKABLE:
    raise ValueError(f"config.data.packing=True works for {list(PACKABLE)} tasks, not kind={kind!r}")
  if config.optimizer.accumulation_steps != 1:
    raise ValueError(
      "config.data.packing=True with optimizer.accumulation_steps="
      f"{config.optimizer.accumulation_steps}: packed batches are not split into microbatches; use one"
    )


def pack_rows(features: dict[str, np.ndarray], kind: str, per_row: int, rows_multiple: int = 1):
  """The packed form of these examples (data/packing.py). Tagging keeps its per-token labels and needs
  no per-example slots; classification and regression read one pooled vector per example; span QA keeps
  per-example answer positions (moved to where the example starts in its row) and `valid`."""
  packed = packing.pack(features, per_row, rows_multiple)
  b = packed.batch
  if kind == "tagging":
    for key in packing.EXAMPLE_KEYS_MADE:
      b.pop(key)
  elif kind == "span":
    offset = b.pop("cls_positions")
    for key in ("start_positions", "end_positions"):
      if key in b:
        b[key] = ((b[key] + offset) * b["valid"]).astype(b[key].dtype)
  return packed


# Span logits after an example's tokens (outputs read back from packed rows): never a candidate answer.
_SPAN_FILL = float(np.finfo(np.float32).min)


def make_predict_step(model, kind: str, mesh, rules, param_shardings):
  keys = OUTPUT_KEYS.get(kind, ("logits",))

  def step(params, batch):
    out = model.apply(
      {"params": params},
      *(batch[k] for k in train_state.MODEL_INPUTS),
      **train_state.model_kwargs(batch),
      deterministic=True,
    )
    return {k: out[k].astype(np.float32) for k in keys}

  return train_state.ShardedStep(
    step,
    mesh,
    rules,
    in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
    out_shardings=NamedSharding(mesh, PartitionSpec()),
  )


def predict_outputs(
  predict_step,
  params,
  features: dict[str, np.ndarray],
  batch_size: int,
  mesh,
  kind: str,
  packed: bool = False,
):
  """The model's outputs for every row of `features`, in order, as numpy arrays (token-level ones at the
  features' width). Unpacked, rows run longest first and each batch is cut to its own length bucket
  (`batching.run_by_length`), so short examples do not pay for max_seq_length; `packed` packs the
  examples into full rows first (`data.packing`, the task `kind` says how) and reads the outputs back
  per example."""
  inputs = {k: v for k, v in features.items() if k in train_state.MODEL_INPUTS}
  length = inputs["input_ids"].shape[-1]
  if packed:
    per_row = packing.per_row_limit(inputs["attention_mask"].sum(1), length)
    rows = pack_rows(inputs, kind, per_row)
    outputs = _predict_full_rows(
      predict_step, params, {k: v for k, v in rows.batch.items() if k != "valid"}, batch_size, mesh
    )
    if kind == "tagging":
      return {k: packing.unpack_tokens(rows, v, length) for k, v in outputs.items()}
    if kind == "span":
      return {k: packing.unpack_tokens(rows, v, length, fill=_SPAN_FILL) for k, v in outputs.items()}
    return {k: packing.unpack_examples(rows, v) for k, v in outputs.items()}
  mine = sharding.process_rows(mesh, batch_size)

  def forward(*arrays):
    batch = {k: v[mine] for k, v in zip(batching.KEYS, arrays)}
    return jax.device_get(predict_step(params, sharding.global_batch(batch, mesh)))

  token_level = OUTPUT_KEYS.get(kind, ("logits",)) if kind in ("tagging", "span") else ()
  fill = _SPAN_FILL if kind == "span" else 0.0
  return batching.run_by_length(inputs, batch_size, forward, token_level, fill, out_width=length)


def _predict_full_rows(predict_step, params, inputs: dict[str, np.ndarray], batch_size: int, mesh):
  """Outputs of rows that run as they are (packed rows: full and carrying their own position and
  segment ids), in order, the last batch padded with empty rows."""
  n = len(inputs["input_ids"])
  rows = sharding.process_rows(mesh, batch_size)
  chunks: dict[str, list] = {}
  for start in range(0, n, batch_size):
    batch = _pad_rows(_take(inputs, np.arange(start, min(start + batch_size, n))), batch_size)
    batch = {k: v[rows] for k, v in batch.items()}
    out = predict_step(params, sharding.global_batch(batch, mesh))
    for k, v in out.items():
      chunks.setdefault(k, []).append(np.asarray(jax.device_get(v))[: min(batch_size, n - start)])
  return {k: np.concatenate(v) for k, v in chunks.items()}


def score(config, data: finetune_data.TaskData, eval_set: finetune_data.EvalSet, outputs) -> dict[str, float]:
  """The task's metric(s) on one evaluation set, from the model's outputs."""
  kind, f = data.kind, eval_set.features
  if kind == "classification" or kind == "choice":
    return metrics.task_metrics(config.metric, outputs["logits"].argmax(-1), f["labels"])
  if kind == "regression":
    return metrics.task_metrics(config.metric, outputs["logits"][:, 0], f["labels"])
  if kind == "tagging":
    predicted = tasks.decode_tags(
      outputs["logits"].argmax(-1),
      f["word_index"],
      [len(e.tokens) for e in eval_set.examples],
      dict(enumerate(data.labels)),
    )
    gold = [list(e.tags) for e in eval_set.examples]
    result = {"token_accuracy": metrics.token_accuracy(gold, predicted)}
    if config.metric == "entity_f1":
      entity = metrics.entity_scores(gold, predicted)
      result.update(precision=entity["precision"], recall=entity["recall"], f1=entity["f1"])
    return result
  # span
  s = config.squad
  predictions = squad.postprocess(
    eval_set.examples,
    eval_set.qa_features,
    outputs["start_logits"],
    outputs["end_logits"],
    n_best=s.n_best,
    max_answer_length=s.max_answer_length,
    version_2=s.version_2,
    null_score_diff_threshold=s.null_score_diff_threshold,
  )
  golds = {e.qid: [] if e.is_impossible else [a[0] for a in e.answers] for e in eval_set.examples}
  result = metrics.squad_evaluate(
    golds,
    {q: p.text for q, p in predictions.items()},
    # inf: no window had a valid span, so no-answer wins at any threshold; the search needs finite scores.
    no_answer_probs={q: min(p.null_score_diff, 1e9) for q, p in predictions.items()} if s.version_2 else None,
    no_answer_threshold=s.null_score_diff_threshold,
  )
  return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}


def evaluate_all(config, data, predict_step, params, mesh) -> dict[str, float]:
  """Metrics of every evaluation set: the first as eval/<metric>, others as eval/<set>/<metric>."""
  results = {}
  for i, eval_set in enumerate(data.evals):
    outputs = predict_outputs(
      predict_step,
      params,
      eval_set.features,
      config.eval_batch_size,
      mesh,
      data.kind,
      packed=config.data.packing,
    )
    for k, v in score(config, data, eval_set, outputs).items():
      results[k if i == 0 else f"{eval_set.name}/{k}"] = v
  return results


# --- export ------------------------------------------------------------------------------------


def task_info(config, data: finetune_data.TaskData, bert: BertConfig, extra: dict | None = None) -> dict:
  info = {
    "kind": data.kind,
    "labels": list(data.labels),
    "max_seq_length": config.data.max_seq_length,
    "metric": config.metric,
    "task": config.task,
  }
  if data.kind == "span":
    # The Predictor cuts contexts into the windows the model was trained on.
    info["squad"] = dict(
      config.squad.to_dict(), doc_stride=config.data.doc_stride, max_query_length=config.data.max_query_length
    )
  info.update(extra or {})
  return info


def _last_eval(history: list[dict]) -> dict:
  rows = [r for r in history if any(k.startswith("eval/") for k in r)]
  return {k: v for k, v in rows[-1].items() if k.startswith("eval/")} if rows else {}


def _agree_on_best(best: dict | None) -> dict:
  """Process 0's best step on every process (only process 0 read the evaluations logged before a resume)."""
  step = int(from_primary(np.int64(best["step"] if best else -1)))
  return best if best is not None and best["step"] == step else {"step": step}


# --- one run -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Shared:
  """What the runs of a learning-rate/seed grid share: the encoder, tokenizer and featurised data."""

  init_from: str
  bert: BertConfig
  encoder_params: dict
  tokenizer: Any
  data: finetune_data.TaskData


def _num_labels(data) -> int:
  return len(data.labels) if data.kind in ("classification", "tagging") else 0


def _init_params(state, shared: Shared):
  params = host_tree(state.params)
  # Tagging and span heads have no pooler: take the encoder weights the model has.
  src = {k: v for k, v in shared.encoder_params.items() if k in params["bert"]}
  want, got = jax.tree.map(np.shape, params["bert"]), jax.tree.map(np.shape, src)
  if want != got:
    raise TrainingError(
      f"config.init_from={shared.init_from!r}: the checkpoint's encoder does not fit the model built "
      f"(model has {sorted(params['bert'])}, checkpoint gives {sorted(src)})"
    )
  params["bert"] = jax.tree.map(lambda a, b: np.asarray(b, a.dtype), params["bert"], src)
  shardings = jax.tree.map(lambda a: a.sharding, state.params)
  return state.replace(params=jax.device_put(params, shardings))


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


def build_task(
  config, bert: BertConfig, kind: str, num_labels: int, learning_rate: float, total_steps: int, mesh, rules
) -> train_state.Trainable:
  """The task model with BERT's fine-tuning optimizer for this learning rate and run length, laid out on mesh."""
  opt = ml_collections.ConfigDict(config.optimizer.to_dict())
  opt.learning_rate = learning_rate
  opt.warmup_steps = int(config.warmup_fraction * total_steps)  # as BERT's run_classifier.py
  tx = optim.make_optimizer(opt, total_steps=total_steps, num_layers=bert.num_layers)
  model = task_model(bert, kind, num_labels)
  abstract, shardings = train_state.state_shardings(model, tx, mesh, rules)
  return train_state.Trainable(model, tx, objectives.get(kind), abstract, shardings)


def run_one(config, workdir: str, learning_rate: float, seed: int, shared: Shared) -> dict[str, Any]:
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
  model, tx, abstract, shardings = task.model, task.tx, task.abstract, task.shardings
  ckpt = checkpointing.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    max_to_keep=config.keep_checkpoints,
    best_metric=config.best_metric,
    best_mode=config.best_mode,
  )
  target = checkpointing.abstract_target(abstract, shardings)
  if ckpt.latest_step() is not None:
    start_step, state = ckpt.restore(target)
    source = f"checkpoint {start_step} in {ckpt.directory}"
  else:
    state, _ = train_state.create_train_state(model, tx, mesh, rules, seed=seed, shardings=shardings)
    state = _init_params(state, shared)
    start_step, source = 0, f"config.init_from={shared.init_from}"
  writer = summaries.MetricWriter(workdir, enabled=primary, resume_step=start_step)
  # Evaluations before a resume, as process 0 logged them (its decisions are broadcast to the others).
  history = summaries.read_metrics(writer.path) if primary and os.path.exists(writer.path) else []
  if primary:
    files.write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
    print(
      f"fine-tune {config.task} ({data.kind}): {data.num_train} examples, {config.epochs} epochs x "
      f"{steps_per_epoch} steps, batch {config.batch_size}, lr {learning_rate:g}, seed {seed}; "
      f"start step {start_step} from {source}",
      flush=True,
    )
  train_step = task.train_step(mesh, rules, config.optimizer.accumulation_steps)
  predict_step = make_predict_step(model, data.kind, mesh, rules, shardings.params)
  rows = sharding.process_rows(mesh, config.batch_size)
  if config.data.packing:
    length = data.train["input_ids"].shape[1]
    # Fixed for the run (one shape per row count): as many examples as the shortest allows, at most a batch.
    per_row = min(config.batch_size, packing.per_row_limit(data.train["attention_mask"].sum(1), length))
  best_host = None  # (step, params on the host) of the best evaluation seen by this process
  train_seconds, real_tokens, step = 0.0, 0, start_step
  last_eval: dict[str, float] = {}
  window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
  order_epoch, order = -1, None

  with Preemption() as preemption:
    while step < total_steps:
      epoch, index = divmod(step, steps_per_epoch)
      if epoch != order_epoch:
        order_epoch, order = epoch, epoch_order(data.num_train, seed, epoch)
      batch_rows = order[index * config.batch_size : (index + 1) * config.batch_size]
      batch = _take(data.train, batch_rows)
      tokens = int(batch["attention_mask"].sum())
      step_rows = rows
      if config.data.packing:
        batch = pack_rows(batch, data.kind, per_row, sharding.data_parallel_size(mesh)).batch
        step_rows = sharding.process_rows(mesh, len(batch["input_ids"]))
      state, step_metrics = train_step(
        state, sharding.global_batch({k: v[step_rows] for k, v in batch.items()}, mesh)
      )
      step += 1
      window_steps += 1
      window_tokens += tokens
      if step % config.log_every == 0 or step % steps_per_epoch == 0:
        host = host_metrics(step_metrics)
        check_finite(host, step)
        elapsed = time.perf_counter() - window_start
        train_seconds += elapsed
        real_tokens += window_tokens
        host["examples_per_second"] = window_steps * config.batch_size / max(elapsed, 1e-9)
        host["real_tokens_per_second"] = window_tokens / max(elapsed, 1e-9)
        writer.write(step, {f"train/{k}": v for k, v in host.items()})
        if primary:
          print(
            f"step {step}/{total_steps} (epoch {epoch + 1}) | loss {host['loss']:.4f} | "
            f"{host['examples_per_second']:.1f} examples/s | "
            f"{host['real_tokens_per_second']:,.0f} real tokens/s | "
            f"ETA {eta((total_steps - step) * elapsed / max(window_steps, 1))}",
            flush=True,
          )
        window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
      end_of_epoch = step % steps_per_epoch == 0
      if end_of_epoch:
        paused = time.perf_counter()
        last_eval = evaluate_all(config, data, predict_step, state.params, mesh)
        record = {f"eval/{k}": v for k, v in last_eval.items()}
        writer.write(step, dict(record, epoch=step // steps_per_epoch))
        history.append(dict(record, step=step))
        if primary:
          print(
            f"eval after epoch {step // steps_per_epoch}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in sorted(last_eval.items())),
            flush=True,
          )
        if config.best_metric not in record:
          raise TrainingError(
            f"config.best_metric={config.best_metric!r} is not among the evaluation's metrics "
            f"{sorted(record)}"
          )
        best = _best(history, config.best_metric, config.best_mode)
        if from_primary(best is not None and best["step"] == step):
          best_host = (step, host_tree(state.params))
        window_start += time.perf_counter() - paused  # evaluation time is not training time
      stop = should_stop(preemption, ckpt, step)
      if end_of_epoch or stop or step % config.checkpoint_every == 0:
        check_finite(host_metrics(step_metrics), step)  # never save a NaN state over the last good one
        paused = time.perf_counter()
        ckpt.save(
          step,
          state,
          config=json.loads(config.to_json()),
          metrics={f"eval/{k}": v for k, v in last_eval.items()} if end_of_epoch else None,
          force=True,
        )
        window_start += time.perf_counter() - paused
      if stop:
        ckpt.wait()
        writer.close()
        ckpt.close()
        if primary:
          print(f"stopped by SIGTERM at step {step}; checkpoint saved in {ckpt.directory}", flush=True)
        return {"preempted": True, "step": step}

  ckpt.wait()
  best = _best(history, config.best_metric, config.best_mode)
  if primary and best is None:
    raise TrainingError(f"no evaluation reported {config.best_metric!r}; metrics seen: {sorted(last_eval)}")
  best = _agree_on_best(best)
  if not last_eval:  # a rerun of a finished run: report the last evaluation it logged
    last_eval = {k[len("eval/") :]: v for k, v in _last_eval(history).items()}
  if best_host is None or best_host[0] != best["step"]:
    _, best_state = ckpt.restore(target, step=best["step"], fall_back=False)
    best_host = (best["step"], host_tree(best_state.params))
  params = best_host[1]
  if bert.scan_layers:
    from bert_jax.models import unscan_params

    params = unscan_params(params, bert.num_layers)
  extra = {"best_step": best["step"], "best": {k: v for k, v in best.items() if k != "step"}}
  if data.kind == "span" and config.squad.version_2 and "eval/best_f1_thresh" in best:
    extra["tuned_null_score_diff_threshold"] = best["eval/best_f1_thresh"]
  if primary:
    from bert_jax.predict import save_task_model

    save_task_model(
      os.path.join(workdir, EXPORT_DIR),
      bert.replace(scan_layers=False),
      params,
      shared.tokenizer,
      task_info(config, data, bert, extra),
    )
  writer.close()
  ckpt.close()
  result = {
    "preempted": False,
    "step": step,
    "best_step": best["step"],
    "best": {k[len("eval/") :]: v for k, v in best.items() if k.startswith("eval/")},
    "final": last_eval,
    "train_seconds": train_seconds,
    "real_tokens_per_second": real_tokens / train_seconds if train_seconds else None,
    "export": os.path.join(workdir, EXPORT_DIR),
  }
  if primary:
    files.write_json(os.path.join(workdir, "result.json"), result)
    print(
      f"done: best {config.best_metric} {best[config.best_metric]:.4f} at step {best['step']}; "
      f"model exported to {result['export']}",
      flush=True,
    )
  return result


# --- grids of learning rates and seeds -----------------------------------------------------------


def summarize(results: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
  """{learning rate: {metric: {mean, std, n}}} over seeds, from each run's best evaluation."""
  by_lr: dict[str, list[dict]] = {}
  for r in results:
    by_lr.setdefault(f"{r['learning_rate']:g}", []).append(r["best"])
  summary = {}
  for lr, bests in by_lr.items():
    names = sorted(set().union(*bests))
    summary[lr] = {
      name: {
        "mean": float(np.mean([b[name] for b in bests if name in b])),
        # Sample standard deviation (ddof=1): the seeds are a sample of the run-to-run spread.
        "std": float(np.std([b[name] for b in bests if name in b], ddof=1)) if len(bests) > 1 else 0.0,
        "n": sum(name in b for b in bests),
      }
      for name in names
    }
  return summary


def summary_markdown(task: str, summary: dict, metric: str) -> str:
  names = sorted({n for per_lr in summary.values() for n in per_lr})
  key = metric[len("eval/") :] if metric.startswith("eval/") else metric
  names = [key] + [n for n in names if n != key and "/" not in n and not n.endswith("_total")]
  lines = [
    f"# {task}: mean ± std over seeds (best epoch of each run)",
    "",
    "| learning rate | seeds | " + " | ".join(names) + " |",
    "|---|---|" + "---|" * len(names),
  ]
  for lr, per in summary.items():
    n = max(v["n"] for v in per.values())
    cells = [f"{per[m]['mean']:.4f} ± {per[m]['std']:.4f}" if m in per else "" for m in names]
    lines.append(f"| {lr} | {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def finetune_and_evaluate(config, workdir: str) -> dict[str, Any]:
  learning_rates = [float(v) for v in finetune_data.split_list(config.learning_rates)] or [
    config.optimizer.learning_rate
  ]
  seeds = [int(v) for v in finetune_data.split_list(config.seeds)] or [config.seed]
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
  if distributed.is_primary():
    files.write_json(os.path.join(workdir, "summary.json"), {"runs": results, "summary": summary})
    table = summary_markdown(config.task, summary, config.best_metric)
    files.write_text(os.path.join(workdir, "summary.md"), table)
    print(table, flush=True)
  return {"preempted": False, "runs": results, "summary": summary}
