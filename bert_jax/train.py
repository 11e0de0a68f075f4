"""The pretraining runner: `train_and_evaluate(config, workdir)` runs configs/pretrain.py.

Order of a run: mesh -> tokenizer and data (pretrain_data.py) -> model and optimizer -> train state, from
the first of: a checkpoint in workdir, `config.resume`, `config.init_from`, scratch -> the loop:
phases in order, held-out evaluation, checkpoints (latest N and the best), metrics to TensorBoard
and metrics.jsonl, a progress line; SIGTERM saves and stops; NaN/Inf stops with the step -> the
model exported for fine-tuning.
"""

from __future__ import annotations

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
  objectives,
  optim,
  sharding,
  summaries,
  topology,
  train_state,
)
from bert_jax.data import pipeline
from bert_jax.models import BertConfig, BertForPreTraining, scan_params
from bert_jax.pretrain_data import (  # noqa: F401  (re-exported: train.X is where callers find them)
  Phase,
  load_or_train_tokenizer,
  masking_config,
  phases_from_config,
  prepare_data,
  require_shared,
)
from bert_jax.run_control import (
  Preemption,
  TrainingError,
  check_finite,
  eta,
  host_metrics,
  host_tree,
  should_stop,
)
from bert_jax.tokenization import Tokenizer

log = logging.getLogger("bert_jax.train")


# --- model -----------------------------------------------------------------------------------


def planned_vocab_size(config) -> int:
  """The vocabulary size a run will have, read without data (compile-only runs): config.model.vocab_size, else
  the tokenizer config.data.vocab names, else the size a trained vocabulary is asked for (config.data.vocab_size,
  an upper bound: training may stop short of it)."""
  if config.model.vocab_size:
    return int(config.model.vocab_size)
  if config.data.vocab:
    return load_or_train_tokenizer(config, workdir="").vocab_size  # a named vocabulary is only read
  return int(config.data.vocab_size)


def build_model(config, vocab_size: int):
  """(the pretraining model, its BertConfig) for a vocabulary of `vocab_size` tokens."""
  values = config.model.to_dict()
  if values["vocab_size"] in (0, None):
    values["vocab_size"] = vocab_size
  bert = BertConfig.from_dict(values, source="config.model")
  if bert.vocab_size != vocab_size:
    raise ValueError(
      f"config.model.vocab_size={bert.vocab_size} but the tokenizer has {vocab_size} "
      "tokens; set config.model.vocab_size=0 to take the tokenizer's"
    )
  pair = objectives.pair_task(config.objective)
  if objectives.model_family(config.objective) == "electra":
    from bert_jax.models import electra

    generator = electra.generator_config(bert, hidden_fraction=1 / config.electra_generator_divisor)
    return electra.ElectraForPretraining(generator, bert), bert
  return BertForPreTraining(bert, nsp=pair is not None), bert


@dataclasses.dataclass
class Run(train_state.Trainable):
  """A pretraining run's model, optimizer, objective and state layout, with the encoder's config."""

  bert: BertConfig = None


def build_run(config, vocab_size: int, mesh, rules) -> Run:
  model, bert = build_model(config, vocab_size)
  tx = optim.make_optimizer(config.optimizer, total_steps=config.total_steps)
  abstract, shardings = train_state.state_shardings(model, tx, mesh, rules)
  return Run(model, tx, objectives.get(config.objective), abstract, shardings, bert)


def flops_per_token(bert: BertConfig, seq_len: int) -> float:
  """Training FLOPs per token: 6 x (matmul parameters) + the attention score/context matmuls
  (12 x layers x hidden x seq_len), the usual estimate (Kaplan et al.; PaLM appendix B)."""
  h, layers = bert.hidden_size, bert.num_layers
  kv = bert.kv_heads * bert.head_dim
  per_layer = 2 * h * h + 2 * h * kv + (3 if bert.gated_mlp else 2) * h * bert.mlp_dim
  return 6.0 * (layers * per_layer + h * bert.vocab_size) + 12.0 * layers * h * seq_len


def peak_flops_per_device(config) -> float | None:
  if config.peak_flops_per_device:
    return float(config.peak_flops_per_device)
  chip = topology.chip_for_device_kind(jax.devices()[0].device_kind)
  return chip.peak_bf16_flops if chip else None


# --- state -------------------------------------------------------------------------------------


def _restore_init_from(path: str, state, bert: BertConfig):
  """Copies encoder (and head) weights of a pretrained checkpoint into a fresh state."""
  from bert_jax.pretrained import from_pretrained

  loaded = from_pretrained(path)
  src = loaded.params
  if bert.scan_layers:
    src = scan_params(src, loaded.config.num_layers)
  params = host_tree(state.params)
  if "bert" not in params:
    raise TrainingError(f"config.init_from={path!r}: this model has no BERT encoder to initialise")
  copied = []
  for key in ("bert", "mlm", "nsp_head"):
    if key in src and key in params:
      want = jax.tree.map(np.shape, params[key])
      got = jax.tree.map(np.shape, src[key])
      if want != got:
        raise TrainingError(
          f"config.init_from={path!r}: {key} shapes differ from config.model "
          "(compare the checkpoint's config with config.model)"
        )
      params[key] = jax.tree.map(lambda a, b: np.asarray(b, a.dtype), params[key], src[key])
      copied.append(key)
  log.info("initialised %s from %s", copied, path)
  shardings = jax.tree.map(lambda a: a.sharding, state.params)
  return state.replace(params=jax.device_put(params, shardings))


def export_model(params, bert: BertConfig, tokenizer: Tokenizer, workdir: str, family: str) -> str | None:
  """Writes the trained BERT (encoder + MLM/NSP heads) to WORKDIR/export as a bert_jax folder, which
  from_pretrained and fine-tuning's init_from read. ELECTRA's discriminator/generator pair is not a
  BertForPreTraining tree: its export is left to the checkpoints."""
  if family != "bert":
    return None
  params = host_tree(params)
  path = os.path.join(workdir, "export")
  if distributed.is_primary():
    from bert_jax.pretrained import PretrainedBert

    PretrainedBert(config=bert, params=params, tokenizer=tokenizer, source=workdir).save(path)
  return path


# --- evaluation --------------------------------------------------------------------------------


def evaluate(eval_step, params, data_dir, config, phase, vocab, mesh, max_batches: int) -> dict[str, float]:
  ds = pipeline.make_eval_dataset(
    data_dir,
    "validation",
    global_batch_size=phase.batch_size,
    seed=config.seed,
    masking=masking_config(config, phase),
    vocab=vocab,
    max_seq_length=phase.max_seq_length,
  )
  totals: dict[str, float] = {}
  total_weight = 0.0
  target_counts = np.zeros(vocab.vocab_size)
  for i, batch in enumerate(ds):
    if max_batches and i >= max_batches:
      break
    target_counts += np.bincount(
      batch["masked_ids"].ravel(), weights=batch["masked_weights"].ravel(), minlength=vocab.vocab_size
    )
    metrics, weight = eval_step(params, sharding.global_batch(batch, mesh))
    metrics, weight = host_metrics(metrics), float(weight)
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + v * weight
    total_weight += weight
  if not total_weight:
    raise TrainingError(f"{data_dir}: the validation split gave no predictions to evaluate")
  results = {k: v / total_weight for k, v in totals.items()}
  # What always guessing the most frequent masked token would score: MLM accuracy must beat it.
  results["unigram_baseline_accuracy"] = float(target_counts.max() / max(target_counts.sum(), 1.0))
  return results


# --- set-up and restore ------------------------------------------------------------------------


@dataclasses.dataclass
class _Setup:
  """What a run builds before its first step; the same whatever state it starts from."""

  workdir: str
  primary: bool
  phases: list[Phase]
  pair_task: str
  mesh: Any
  rules: Any
  tokenizer: Tokenizer
  vocab: pipeline.VocabInfo
  run: Run


def _set_up(config, workdir: str) -> _Setup:
  """Phases, mesh, tokenizer, model and optimizer. Settings that cannot work (an unknown objective, a batch
  the mesh does not divide) fail before the tokenizer or the data cost any time."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  primary = distributed.is_primary()
  phases = phases_from_config(config)
  objectives.get(config.objective)  # an unknown name fails before any work
  pair_task = objectives.pair_task(config.objective) or "none"
  mesh, rules = sharding.from_config(config.mesh)
  for phase in phases:
    sharding.check_batch(phase.batch_size, mesh, accumulation_steps=config.optimizer.accumulation_steps)
  tokenizer = load_or_train_tokenizer(config, workdir)
  vocab = pipeline.VocabInfo.from_tokenizer(tokenizer)
  run = build_run(config, tokenizer.vocab_size, mesh, rules)
  return _Setup(workdir, primary, phases, pair_task, mesh, rules, tokenizer, vocab, run)


def _open_checkpointer(config, workdir: str) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    max_to_keep=config.keep_checkpoints,
    best_metric=config.best_metric or None,
    best_mode=config.best_mode,
  )


def _restore_or_init(config, setup: _Setup, ckpt: checkpointing.Checkpointer):
  """(state, its step, the checkpointer holding the data iterator's position or None, where it came from),
  from the first of: a checkpoint in workdir, config.resume, config.init_from, scratch."""
  run = setup.run
  target = checkpointing.abstract_target(run.abstract, run.shardings)
  if ckpt.latest_step() is not None:
    step, state = ckpt.restore(target)
    return state, step, ckpt, f"checkpoint {step} in {ckpt.directory}"
  if config.resume:
    other = checkpointing.Checkpointer(
      os.path.join(config.resume, "checkpoints")
      if os.path.isdir(os.path.join(config.resume, "checkpoints"))
      else config.resume
    )
    step, state = other.restore(target)
    return state, step, other, f"config.resume={config.resume} (step {step})"
  state, _ = train_state.create_train_state(
    run.model, run.tx, setup.mesh, setup.rules, seed=config.seed, shardings=run.shardings
  )
  if not config.init_from:
    return state, 0, None, "scratch"
  return (
    _restore_init_from(config.init_from, state, run.bert),
    0,
    None,
    f"config.init_from={config.init_from}",
  )


def _announce_start(config, setup: _Setup, start_step: int, source: str) -> None:
  if not setup.primary:
    return
  bert = setup.run.bert
  log.info("starting at step %d from %s", start_step, source)
  print(
    f"bert_jax: {bert.num_layers} layers, hidden {bert.hidden_size}, vocab {bert.vocab_size}; "
    f"objective {config.objective}; mesh {dict(setup.mesh.shape)} ({config.mesh.strategy}); start step "
    f"{start_step} from {source}",
    flush=True,
  )


def _open_metrics(setup: _Setup, start_step: int, config_json: dict) -> summaries.MetricWriter:
  """The metric writer (a resumed run drops the rows logged after its checkpoint) and config.json."""
  writer = summaries.MetricWriter(setup.workdir, enabled=setup.primary, resume_step=start_step)
  if setup.primary:
    files.write_json(os.path.join(setup.workdir, "config.json"), config_json)
  return writer


# --- the loop ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Loop:
  """The training loop's state across steps and phases, and where it writes: checkpoints and metrics."""

  config: Any
  setup: _Setup
  ckpt: checkpointing.Checkpointer
  writer: summaries.MetricWriter
  config_json: dict
  eval_step: Any
  peak_flops: float | None  # per device; None where unknown (no MFU then)
  state: Any
  step: int
  data_state_from: checkpointing.Checkpointer | None  # the first phase run continues its data from here
  last_train: dict[str, float] = dataclasses.field(default_factory=dict)
  last_eval: dict[str, float] = dataclasses.field(default_factory=dict)

  def result(self, preempted: bool) -> dict[str, Any]:
    return {"train": self.last_train, "eval": self.last_eval, "step": self.step, "preempted": preempted}


@dataclasses.dataclass
class _Window:
  """The steps since the last progress line, whose throughput it reports."""

  tokens_per_step: int
  flops_per_step: float
  start: float = dataclasses.field(default_factory=time.perf_counter)
  steps: int = 0


def _phase_data(loop: _Loop, phase: Phase):
  """(the phase's data folder, built on first use; its training iterator). A resumed run's iterator
  continues from the checkpointed position when the run stopped within this phase."""
  config, setup = loop.config, loop.setup
  data_dir = prepare_data(config, setup.workdir, setup.tokenizer, phase, setup.pair_task)
  dataset = pipeline.make_dataset(
    data_dir,
    "train",
    global_batch_size=phase.batch_size,
    seed=config.seed,
    masking=masking_config(config, phase),
    vocab=setup.vocab,
    max_seq_length=phase.max_seq_length,
    dynamic_masking=config.data.dynamic_masking,
  )
  iterator = iter(dataset)
  if loop.data_state_from is not None and loop.step > phase.start:
    loop.data_state_from.restore_data(loop.step, iterator)  # the iterator's position within this phase
  loop.data_state_from = None
  return data_dir, iterator


def _train_phase(loop: _Loop, phase: Phase, preemption: Preemption) -> bool:
  """Runs the phase's remaining steps, logging, evaluating and checkpointing on their intervals; True when
  the run must stop (SIGTERM or the runtime's preemption notice), its checkpoint saved."""
  config, mesh = loop.config, loop.setup.mesh
  data_dir, iterator = _phase_data(loop, phase)
  train_step = loop.setup.run.train_step(mesh, loop.setup.rules, config.optimizer.accumulation_steps)
  tokens_per_step = phase.batch_size * phase.max_seq_length
  window = _Window(
    tokens_per_step, flops_per_token(loop.setup.run.bert, phase.max_seq_length) * tokens_per_step
  )
  pending = None  # metrics of the previous step, checked once the next step is dispatched
  while loop.step < phase.stop:
    batch = next(iterator)
    loop.state, metrics = train_step(loop.state, sharding.global_batch(batch, mesh))
    if pending is not None:
      check_finite(host_metrics(pending[1]), pending[0])
    loop.step += 1
    pending = (loop.step, metrics)
    window.steps += 1
    if loop.step % config.log_every == 0 or loop.step == phase.stop:
      _log_progress(loop, window, metrics)  # checks these metrics
      pending = None
    eval_now = config.eval_every and (loop.step % config.eval_every == 0 or loop.step == config.total_steps)
    if eval_now:
      _evaluate_and_log(loop, phase, data_dir)
    stop = should_stop(preemption, loop.ckpt, loop.step)
    if eval_now or stop or loop.step % config.checkpoint_every == 0 or loop.step == phase.stop:
      _save(loop, iterator, with_eval=eval_now)
    if stop:
      return True
  if pending is not None:
    check_finite(host_metrics(pending[1]), pending[0])
  return False


def _log_progress(loop: _Loop, window: _Window, metrics) -> None:
  """Checks the step's metrics, writes them with the window's throughput, prints the progress line, and
  starts a new window."""
  config, step = loop.config, loop.step
  host = host_metrics(metrics)
  check_finite(host, step)
  elapsed = time.perf_counter() - window.start
  steps_per_s = window.steps / max(elapsed, 1e-9)
  host["steps_per_second"] = steps_per_s
  host["tokens_per_second"] = steps_per_s * window.tokens_per_step
  line = (
    f"step {step}/{config.total_steps} | loss {host['loss']:.4f}"
    + (f" | mlm_acc {host['mlm_accuracy']:.3f}" if "mlm_accuracy" in host else "")
    + f" | {steps_per_s:.2f} steps/s | {host['tokens_per_second']:,.0f} tokens/s"
  )
  if loop.peak_flops:
    host["mfu"] = window.flops_per_step * steps_per_s / (loop.peak_flops * jax.device_count())
    line += f" | MFU {100 * host['mfu']:.1f}%"
  line += f" | ETA {eta((config.total_steps - step) / max(steps_per_s, 1e-9))}"
  loop.writer.write(step, {f"train/{k}": v for k, v in host.items()})
  loop.last_train = host
  if loop.setup.primary:
    print(line, flush=True)
  window.start, window.steps = time.perf_counter(), 0


def _evaluate_and_log(loop: _Loop, phase: Phase, data_dir: str) -> None:
  config = loop.config
  loop.last_eval = evaluate(
    loop.eval_step,
    loop.state.params,
    data_dir,
    config,
    phase,
    loop.setup.vocab,
    loop.setup.mesh,
    config.eval_batches,
  )
  loop.writer.write(loop.step, {f"eval/{k}": v for k, v in loop.last_eval.items()})
  if loop.setup.primary:
    print(
      f"eval at step {loop.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(loop.last_eval.items())),
      flush=True,
    )


def _save(loop: _Loop, iterator, with_eval) -> None:
  """A checkpoint of the state and the data position; `with_eval`: this step's evaluation ranks it."""
  metrics_for_best = {f"eval/{k}": v for k, v in loop.last_eval.items()} if with_eval else None
  loop.ckpt.save(
    loop.step,
    loop.state,
    data_iterator=iterator,
    config=loop.config_json,
    metrics=metrics_for_best,
    force=True,
  )


# --- the end of a run --------------------------------------------------------------------------


def _stop_preempted(loop: _Loop) -> dict[str, Any]:
  """After the stop's checkpoint: wait for it to be written, close the files, say where it is."""
  loop.ckpt.wait()
  loop.writer.flush()
  if loop.setup.primary:
    print(f"stopped by SIGTERM at step {loop.step}; checkpoint saved in {loop.ckpt.directory}", flush=True)
  loop.writer.close()
  loop.ckpt.close()
  return loop.result(preempted=True)


def _finish(loop: _Loop) -> dict[str, Any]:
  """Waits for the last checkpoint, exports the model for fine-tuning, plots the curves, says where
  everything is."""
  config, setup, ckpt, writer = loop.config, loop.setup, loop.ckpt, loop.writer
  ckpt.wait()
  writer.close()
  ckpt.close()
  family = objectives.model_family(config.objective)
  export = export_model(loop.state.params, setup.run.bert, setup.tokenizer, setup.workdir, family)
  if setup.primary:
    plot = summaries.plot_curves(writer.path, os.path.join(setup.workdir, "curves.png"))
    print(
      f"done: {loop.step} steps. checkpoints: {ckpt.directory}\n  TensorBoard: tensorboard --logdir "
      f"{writer.tensorboard_dir}\n  metrics: {writer.path}\n  loss curves: {plot}"
      + (f"\n  model (fine-tune it with init_from={setup.workdir}): {export}" if export else ""),
      flush=True,
    )
  return loop.result(preempted=False)


# --- the run -----------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs config (configs/pretrain.py) in workdir; returns the last train and eval metrics."""
  # Set-up: phases, mesh, tokenizer (trained on first use), model and optimizer.
  setup = _set_up(config, workdir)

  # Restore or resume: a checkpoint in workdir, else config.resume, else config.init_from, else scratch.
  ckpt = _open_checkpointer(config, setup.workdir)
  state, start_step, data_state_from, source = _restore_or_init(config, setup, ckpt)
  _announce_start(config, setup, start_step, source)

  # Metrics (TensorBoard, metrics.jsonl), config.json, and the evaluation step.
  config_json = json.loads(config.to_json())
  writer = _open_metrics(setup, start_step, config_json)
  eval_step = setup.run.eval_step(setup.mesh, setup.rules)
  loop = _Loop(
    config,
    setup,
    ckpt,
    writer,
    config_json,
    eval_step,
    peak_flops_per_device(config),
    state,
    start_step,
    data_state_from,
  )

  # The loop: phases in order, each logging, evaluating and checkpointing on its intervals; SIGTERM saves
  # and stops.
  with Preemption() as preemption:
    for phase in setup.phases:
      if loop.step >= phase.stop:
        continue  # done before a resume
      if _train_phase(loop, phase, preemption):
        return _stop_preempted(loop)

  # Export: the last checkpoint written, the model saved for fine-tuning.
  return _finish(loop)
