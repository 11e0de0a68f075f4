"""The experiment runner: `train_and_evaluate(config, workdir)` pretrains a BERT.

Order of a run: mesh -> tokenizer (trained from the corpus when the config names none) -> data
(built once per phase into array_record, reused after) -> model and optimizer -> train state, from
the first of: a checkpoint in workdir, `config.resume`, `config.init_from`, scratch -> the loop:
phases in order, held-out evaluation, checkpoints (latest N and the best), metrics to TensorBoard
and metrics.jsonl, a progress line; SIGTERM saves and stops; NaN/Inf stops with the step.
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
  hub,
  objectives,
  optim,
  sharding,
  summaries,
  topology,
  train_state,
)
from bert_jax.data import masking as masking_lib
from bert_jax.data import pipeline, records, text
from bert_jax.models import BertConfig, BertForPreTraining, scan_params
from bert_jax.run_control import (
  Preemption,
  TrainingError,
  check_finite,
  eta,
  host_metrics,
  host_tree,
  should_stop,
)
from bert_jax.tokenization import Tokenizer, train_wordpiece

log = logging.getLogger("bert_jax.train")


@dataclasses.dataclass
class Phase:
  index: int
  start: int  # first global step of the phase
  steps: int
  max_seq_length: int
  batch_size: int
  max_predictions: int

  @property
  def stop(self) -> int:
    return self.start + self.steps


def phases_from_config(config) -> list[Phase]:
  """config.phases (a list of {steps, max_seq_length, batch_size, max_predictions}), or one phase from
  the top-level settings. The steps must add up to config.total_steps."""
  specs = list(config.phases) or [
    dict(
      steps=config.total_steps,
      max_seq_length=config.data.max_seq_length,
      batch_size=config.batch_size,
      max_predictions=config.data.masking.max_predictions,
    )
  ]
  phases, start = [], 0
  for i, spec in enumerate(specs):
    spec = dict(spec)
    unknown = sorted(set(spec) - {"steps", "max_seq_length", "batch_size", "max_predictions"})
    missing = sorted({"steps", "max_seq_length", "batch_size"} - set(spec))
    if unknown or missing:
      raise ValueError(
        f"config.phases[{i}]: unknown keys {unknown}, missing keys {missing}; a phase is "
        "{steps, max_seq_length, batch_size[, max_predictions]}"
      )
    if spec["steps"] <= 0:
      raise ValueError(f"config.phases[{i}].steps={spec['steps']}; expected a positive number")
    phases.append(
      Phase(
        i,
        start,
        int(spec["steps"]),
        int(spec["max_seq_length"]),
        int(spec["batch_size"]),
        int(spec.get("max_predictions", config.data.masking.max_predictions)),
      )
    )
    start += int(spec["steps"])
  if start != config.total_steps:
    raise ValueError(
      f"config.phases add up to {start} steps but config.total_steps={config.total_steps}; "
      f"make them agree (phase steps: {[p.steps for p in phases]})"
    )
  return phases


# --- tokenizer and data ------------------------------------------------------------------------


def load_or_train_tokenizer(config, workdir: str) -> Tokenizer:
  data = config.data
  if data.vocab:
    return (
      Tokenizer.from_pretrained(data.vocab)
      if os.path.isdir(data.vocab) or hub.is_hub(data.vocab)  # hf://ORG/NAME: a Hub model's tokenizer
      else Tokenizer.from_vocab(data.vocab, lowercase=data.lowercase)
    )
  vocab_dir = os.path.join(workdir, "vocab")
  vocab_file = os.path.join(vocab_dir, "vocab.txt")
  if not os.path.exists(vocab_file) and data.source.startswith(text.TFDS_PREFIX):
    raise ValueError(
      f"config.data.vocab is empty and the source {data.source!r} is a TFDS dataset; "
      "train a vocabulary from files (config.data.source=path) or give config.data.vocab"
    )
  # Process 0 alone decides whether to train (what another process sees may differ or lag), and every
  # process meets the barrier either way.
  if distributed.is_primary() and not os.path.exists(vocab_file):
    paths = text.expand_paths(data.source)
    log.info("training a WordPiece vocabulary of %d tokens on %s", data.vocab_size, paths)
    tokenizer = train_wordpiece(
      paths, vocab_size=data.vocab_size, lowercase=data.lowercase, limit_alphabet=data.vocab_limit_alphabet
    )
    tokenizer.save(vocab_dir)
  _barrier("vocab")
  require_shared(vocab_file, "the vocabulary")
  return Tokenizer.from_pretrained(vocab_dir)


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"bert_jax:{name}")


def require_shared(path: str, what: str, wait_s: float = 90.0) -> None:
  """After a barrier, on a multi-process run: `path`, which process 0 has written, must be visible here. It is
  not when the workdir is on each host's own disk; say so rather than fail on a missing file. Waits up to
  `wait_s` first: a network file system may answer from a cache of misses for a while (Cloud Storage FUSE
  caches "not found" answers by default)."""
  if jax.process_count() == 1:
    return
  deadline = time.monotonic() + wait_s
  while not os.path.exists(path) and time.monotonic() < deadline:
    time.sleep(1.0)
  if not os.path.exists(path):
    raise TrainingError(
      f"process {jax.process_index()} cannot see {what} ({path}), which process 0 wrote: a multi-host run "
      "needs its workdir and data.data_dir on a file system every host shares (README, 'Cloud Storage')"
    )


def prepare_data(config, workdir: str, tokenizer: Tokenizer, phase: Phase, pair_task: str) -> str:
  """Builds (once) the array_record instances for a phase's sequence length; returns their folder."""
  data = config.data
  data_dir = os.path.join(data.data_dir or os.path.join(workdir, "data"), f"seq{phase.max_seq_length}")
  if distributed.is_primary():
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # the runner prints its own progress
    source = text.open_text_source(
      data.source,
      format=data.format or None,
      split=data.tfds_split,
      data_dir=data.tfds_data_dir or None,
      field=data.tfds_field,
    )
    records.build_pretraining_data(
      data_dir,
      source=source,
      tokenizer=tokenizer,
      max_seq_length=phase.max_seq_length,
      pair_task=pair_task,
      short_seq_prob=data.short_seq_prob,
      dupe_factor=data.dupe_factor,
      packing=data.packing,
      validation=data.validation,
      seed=config.seed,
      on_mismatch=data.on_mismatch,
    )
  _barrier(f"data-{phase.index}")
  require_shared(os.path.join(data_dir, records.MANIFEST), "the pretraining instances")
  return data_dir


def masking_config(config, phase: Phase) -> masking_lib.MaskingConfig:
  m = config.data.masking
  return masking_lib.MaskingConfig(
    rate=m.rate,
    max_predictions=phase.max_predictions,
    mode=m.mode,
    replace_with_mask=m.replace_with_mask,
    replace_with_random=m.replace_with_random,
    span_p=m.span_p,
    span_max=m.span_max,
  )


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


# --- the loop ----------------------------------------------------------------------------------


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


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs config (configs/pretrain.py) in workdir; returns the last train and eval metrics."""
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
  model, bert, tx, abstract, shardings = run.model, run.bert, run.tx, run.abstract, run.shardings

  ckpt = checkpointing.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    max_to_keep=config.keep_checkpoints,
    best_metric=config.best_metric or None,
    best_mode=config.best_mode,
  )
  target = checkpointing.abstract_target(abstract, shardings)
  config_json = json.loads(config.to_json())
  state, start_step, data_state_from = None, 0, None
  if ckpt.latest_step() is not None:
    start_step, state = ckpt.restore(target)
    data_state_from, source = ckpt, f"checkpoint {start_step} in {ckpt.directory}"
  elif config.resume:
    other = checkpointing.Checkpointer(
      os.path.join(config.resume, "checkpoints")
      if os.path.isdir(os.path.join(config.resume, "checkpoints"))
      else config.resume
    )
    start_step, state = other.restore(target)
    data_state_from, source = other, f"config.resume={config.resume} (step {start_step})"
  else:
    state, _ = train_state.create_train_state(model, tx, mesh, rules, seed=config.seed, shardings=shardings)
    source = "scratch"
    if config.init_from:
      state = _restore_init_from(config.init_from, state, bert)
      source = f"config.init_from={config.init_from}"
  if primary:
    log.info("starting at step %d from %s", start_step, source)
    print(
      f"bert_jax: {bert.num_layers} layers, hidden {bert.hidden_size}, vocab {bert.vocab_size}; "
      f"objective {config.objective}; mesh {dict(mesh.shape)} ({config.mesh.strategy}); start step "
      f"{start_step} from {source}",
      flush=True,
    )

  writer = summaries.MetricWriter(workdir, enabled=primary, resume_step=start_step)
  if primary:
    files_config = os.path.join(workdir, "config.json")
    from bert_jax import files

    files.write_json(files_config, config_json)
  eval_step = run.eval_step(mesh, rules)
  peak = peak_flops_per_device(config)
  last_train: dict[str, float] = {}
  last_eval: dict[str, float] = {}
  step = start_step

  def save(step, it, metrics=None, force=False):
    ckpt.save(step, state, data_iterator=it, config=config_json, metrics=metrics, force=force)

  with Preemption() as preemption:
    for phase in phases:
      if step >= phase.stop:
        continue
      data_dir = prepare_data(config, workdir, tokenizer, phase, pair_task)
      dataset = pipeline.make_dataset(
        data_dir,
        "train",
        global_batch_size=phase.batch_size,
        seed=config.seed,
        masking=masking_config(config, phase),
        vocab=vocab,
        max_seq_length=phase.max_seq_length,
        dynamic_masking=config.data.dynamic_masking,
      )
      iterator = iter(dataset)
      if data_state_from is not None and step > phase.start:
        data_state_from.restore_data(step, iterator)  # the iterator's position within this phase
      data_state_from = None
      train_step = run.train_step(mesh, rules, config.optimizer.accumulation_steps)
      tokens_per_step = phase.batch_size * phase.max_seq_length
      step_flops = flops_per_token(bert, phase.max_seq_length) * tokens_per_step
      window_start, window_steps = time.perf_counter(), 0
      pending = None  # metrics of the previous step, checked once the next step is dispatched
      while step < phase.stop:
        batch = next(iterator)
        state, metrics = train_step(state, sharding.global_batch(batch, mesh))
        if pending is not None:
          check_finite(host_metrics(pending[1]), pending[0])
        step += 1
        pending = (step, metrics)
        window_steps += 1
        if step % config.log_every == 0 or step == phase.stop:
          host = host_metrics(metrics)
          check_finite(host, step)
          pending = None
          elapsed = time.perf_counter() - window_start
          steps_per_s = window_steps / max(elapsed, 1e-9)
          host["steps_per_second"] = steps_per_s
          host["tokens_per_second"] = steps_per_s * tokens_per_step
          line = (
            f"step {step}/{config.total_steps} | loss {host['loss']:.4f}"
            + (f" | mlm_acc {host['mlm_accuracy']:.3f}" if "mlm_accuracy" in host else "")
            + f" | {steps_per_s:.2f} steps/s | {host['tokens_per_second']:,.0f} tokens/s"
          )
          if peak:
            host["mfu"] = step_flops * steps_per_s / (peak * jax.device_count())
            line += f" | MFU {100 * host['mfu']:.1f}%"
          line += f" | ETA {eta((config.total_steps - step) / max(steps_per_s, 1e-9))}"
          writer.write(step, {f"train/{k}": v for k, v in host.items()})
          last_train = host
          if primary:
            print(line, flush=True)
          window_start, window_steps = time.perf_counter(), 0
        eval_now = config.eval_every and (step % config.eval_every == 0 or step == config.total_steps)
        if eval_now:
          last_eval = evaluate(
            eval_step, state.params, data_dir, config, phase, vocab, mesh, config.eval_batches
          )
          writer.write(step, {f"eval/{k}": v for k, v in last_eval.items()})
          if primary:
            print(
              f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(last_eval.items())),
              flush=True,
            )
        stop = should_stop(preemption, ckpt, step)
        if eval_now or stop or step % config.checkpoint_every == 0 or step == phase.stop:
          metrics_for_best = {f"eval/{k}": v for k, v in last_eval.items()} if eval_now else None
          save(step, iterator, metrics_for_best, force=True)
        if stop:
          ckpt.wait()
          writer.flush()
          if primary:
            print(f"stopped by SIGTERM at step {step}; checkpoint saved in {ckpt.directory}", flush=True)
          writer.close()
          ckpt.close()
          return {"train": last_train, "eval": last_eval, "step": step, "preempted": True}
      if pending is not None:
        check_finite(host_metrics(pending[1]), pending[0])
  ckpt.wait()
  writer.close()
  ckpt.close()
  export = export_model(state.params, bert, tokenizer, workdir, objectives.model_family(config.objective))
  if primary:
    plot = summaries.plot_curves(writer.path, os.path.join(workdir, "curves.png"))
    print(
      f"done: {step} steps. checkpoints: {ckpt.directory}\n  TensorBoard: tensorboard --logdir "
      f"{writer.tensorboard_dir}\n  metrics: {writer.path}\n  loss curves: {plot}"
      + (f"\n  model (fine-tune it with init_from={workdir}): {export}" if export else ""),
      flush=True,
    )
  return {"train": last_train, "eval": last_eval, "step": step, "preempted": False}
