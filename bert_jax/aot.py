"""Compile-only runs: will this config fit on that TPU slice, and how fast could it go? Answered on a CPU.

    python -m bert_jax.main --config=configs/pretrain.py:variant=large --workdir=DIR --compile_only=v5p-128

The job's own code builds the mesh (over the compile-only devices of a TPU slice that is not attached,
bert_jax/topology.py), the rules, the abstract train state and the exact jitted steps a real run calls:
every phase's train step and the eval step (pretraining), the train and predict steps (fine-tuning), the
encoder's forward (embed). Nothing is allocated and no data is read: batch shapes come from the config. Each
step is lowered and compiled by the real TPU compiler (libtpu), and the report says, per chip:

- HBM: arguments (parameters, optimizer state, batch), temporaries, outputs not aliased to arguments, code;
  their total against the chip's HBM: fits, or by how much it does not, and what to change;
- XLA's cost analysis (FLOPs, bytes accessed) and the roofline bound on step time from the chip's peak bf16
  FLOP/s and HBM bandwidth (max of the two times), with the MFU that bound implies (model FLOPs, 6 x
  parameters per token plus attention, over peak x bound): the best a real step could reach;
- every collective in the compiled program (kind, count, bytes), Mosaic (Pallas) kernels, and whether XLA's
  partitioner fell back to "involuntary full rematerialization" (a layout that copies whole arrays);
- compile time, jax and libtpu versions.

Reading the compiled step and writing the report: bert_jax/aot_report.py. The run prints the report and writes
it to DIR/compile/<target>.json and .md; nothing else is written (no checkpoints, no XLA cache). The exit status is 0 when every step fits, 3 when one does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import files, sharding, topology, train_state
from bert_jax.aot_report import advice, analyse, collectives, markdown, versions

EXIT_DOES_NOT_FIT = 3


@dataclasses.dataclass
class Program:
  """One jitted step of the job, with abstract (sharded) arguments: what a real run compiles."""

  name: str
  step: Any  # train_state.ShardedStep (or a plain jitted function with its mesh context)
  args: tuple
  parts: dict[str, Any]  # argument name -> abstract tree, for the per-chip breakdown
  tokens: int  # tokens per step (global)
  model_flops: float  # per step, all chips (0: not a training step)
  notes: list[str] = dataclasses.field(default_factory=list)
  scanned: bool = False  # layers under nn.scan: XLA's cost analysis counts the loop body once


def _struct(shape, dtype, sharding_) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding_)


def _abstract_state(abstract, shardings):
  return jax.tree.map(lambda a, s: _struct(a.shape, a.dtype, s), abstract, shardings)


def abstract_batch(arrays: dict[str, np.ndarray], mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Host batch arrays (or their shapes) -> global abstract arrays split over data x fsdp."""
  batch_sharding = sharding.batch_sharding(mesh)
  return {k: _struct(v.shape, v.dtype, batch_sharding) for k, v in arrays.items()}


# --- the programs of each job ---------------------------------------------------------------------


def pretraining_batch(batch_size, max_seq_length, max_predictions, pair_task, packed, evaluation=False):
  """The fields and shapes of a pretraining batch (data/pipeline.py make_dataset / make_eval_dataset)."""
  tokens = ("input_ids", "attention_mask", "token_type_ids") + (("segment_ids", "position_ids") if packed else ())
  arrays = {k: np.zeros((batch_size, max_seq_length), np.int32) for k in tokens}
  arrays["masked_positions"] = np.zeros((batch_size, max_predictions), np.int32)
  arrays["masked_ids"] = np.zeros((batch_size, max_predictions), np.int32)
  arrays["masked_weights"] = np.zeros((batch_size, max_predictions), np.float32)
  if pair_task:
    arrays["nsp_labels"] = np.zeros((batch_size,), np.int32)
  if evaluation:
    arrays["valid"] = np.zeros((batch_size,), np.int32)
  return arrays


def _pretrain_programs(config, mesh, rules) -> list[Program]:
  from bert_jax import objectives, train

  phases = train.phases_from_config(config)
  for phase in phases:
    sharding.check_batch(
      phase.batch_size, mesh, process_count=_process_count(mesh), accumulation_steps=config.optimizer.accumulation_steps
    )
  vocab_size = train.planned_vocab_size(config)
  run = train.build_run(config, vocab_size, mesh, rules)
  pair = objectives.pair_task(config.objective)
  packed = bool(config.data.packing)
  state = _abstract_state(run.abstract, run.shardings)
  notes = []
  if not config.model.vocab_size and not config.data.vocab:
    notes.append(f"vocabulary: {vocab_size} tokens (config.data.vocab_size, the size a trained one is asked for)")
  notes += _kernel_notes(run.bert)
  programs = []
  for phase in phases:
    train_batch = abstract_batch(
      pretraining_batch(phase.batch_size, phase.max_seq_length, phase.max_predictions, pair, packed), mesh
    )
    tokens = phase.batch_size * phase.max_seq_length
    programs.append(
      Program(
        f"train step, phase {phase.index} (seq {phase.max_seq_length}, batch {phase.batch_size})",
        run.train_step(mesh, rules, config.optimizer.accumulation_steps),
        (state, train_batch),
        {"params": state.params, "optimizer state": state.opt_state, "batch": train_batch},
        tokens,
        train.flops_per_token(run.bert, phase.max_seq_length) * tokens,
        list(notes),
        run.bert.scan_layers,
      )
    )
    if config.eval_every:
      eval_batch = abstract_batch(
        pretraining_batch(
          phase.batch_size, phase.max_seq_length, phase.max_predictions, pair, packed, evaluation=True
        ),
        mesh,
      )
      programs.append(
        Program(
          f"eval step, phase {phase.index} (seq {phase.max_seq_length}, batch {phase.batch_size})",
          run.eval_step(mesh, rules),
          (state.params, eval_batch),
          {"params": state.params, "batch": eval_batch},
          tokens,
          0.0,
          list(notes),
          run.bert.scan_layers,
        )
      )
  return programs


# Label counts when the config does not name the labels (they come from the data in a real run).
def _kernel_notes(bert) -> list[str]:
  """The TPU kernels have no attention dropout: with it, training steps run the xla kernel (logged)."""
  if bert.attention_kernel in ("pallas", "splash") and bert.attention_dropout_rate > 0:
    return [
      f"attention_kernel={bert.attention_kernel} with attention_dropout_rate={bert.attention_dropout_rate}: the "
      "train step uses the xla kernel (the TPU kernels have no attention dropout; set it to 0 to use them)"
    ]
  return []


_DEFAULT_LABELS = {"classification": 2, "tagging": 9, "regression": 0, "span": 0, "choice": 0}
_CHOICES = 4  # SWAG's endings per example


def finetune_batch(config, kind: str, batch_size: int, length: int, num_labels: int) -> dict[str, np.ndarray]:
  """A training batch of the task's features (data/tasks.py), packed as the runner packs it when
  config.data.packing: the row count is its upper bound, one example per row (a real run packs fewer rows)."""
  from bert_jax import finetune

  shape = (batch_size, _CHOICES, length) if kind == "choice" else (batch_size, length)
  arrays = {k: np.zeros(shape, np.int32) for k in train_state.MODEL_INPUTS}
  if kind in ("classification", "choice"):
    arrays["labels"] = np.zeros((batch_size,), np.int32)
  elif kind == "regression":
    arrays["labels"] = np.zeros((batch_size,), np.float32)
  elif kind == "tagging":
    arrays["labels"] = np.zeros((batch_size, length), np.int32)
  elif kind == "span":
    arrays["start_positions"] = np.zeros((batch_size,), np.int32)
    arrays["end_positions"] = np.zeros((batch_size,), np.int32)
  if config.data.packing:
    finetune.check_packing(config, kind)
    arrays["attention_mask"][:, 0] = 1  # one real token each: every example fits its own row
    arrays = finetune.pack_rows(arrays, kind, per_row=1).batch
  return arrays


def _finetune_programs(config, mesh, rules) -> list[Program]:
  from bert_jax import finetune
  from bert_jax.data import finetune_data
  from bert_jax.pretrained import read_config

  if not config.init_from:
    raise ValueError(
      "config.init_from is empty: a compile-only fine-tuning run takes the encoder's sizes from the checkpoint "
      "folder's config file (its weights are not read)"
    )
  overrides = {k: config.model[k] for k in finetune.MODEL_OVERRIDES}
  bert = read_config(finetune.resolve_init_from(config.init_from), **overrides)
  kind = config.kind
  labels = finetune_data.split_list(config.data.labels)
  num_labels = len(labels) or _DEFAULT_LABELS[kind]
  notes = []
  if kind in ("classification", "tagging") and not labels:
    notes.append(f"{num_labels} labels assumed (set config.data.labels for the task's own)")
  if kind == "choice":
    notes.append(f"{_CHOICES} choices per example")
  notes += _kernel_notes(bert)
  if config.data.packing:
    notes.append("packed: the row count's upper bound (the batch size; a real run packs fewer rows)")
  for size in (config.batch_size, config.eval_batch_size):
    sharding.check_batch(size, mesh, process_count=_process_count(mesh))
  sharding.check_batch(
    config.batch_size, mesh, process_count=_process_count(mesh), accumulation_steps=config.optimizer.accumulation_steps
  )
  length = config.data.max_seq_length
  # The schedule's length changes no shape: one epoch of 1,000 steps stands in for the data's.
  task = finetune.build_task(config, bert, kind, num_labels, config.optimizer.learning_rate, 1000, mesh, rules)
  state = _abstract_state(task.abstract, task.shardings)
  train_batch = abstract_batch(finetune_batch(config, kind, config.batch_size, length, num_labels), mesh)
  examples = config.batch_size * (_CHOICES if kind == "choice" else 1)
  flops = _flops(bert, length) * examples * length
  predict_arrays = finetune_batch(config, kind, config.eval_batch_size, length, num_labels)
  keep = train_state.MODEL_INPUTS + train_state.OPTIONAL_MODEL_INPUTS
  predict_batch = abstract_batch({k: v for k, v in predict_arrays.items() if k in keep}, mesh)
  return [
    Program(
      f"train step ({kind}, seq {length}, batch {config.batch_size})",
      task.train_step(mesh, rules, config.optimizer.accumulation_steps),
      (state, train_batch),
      {"params": state.params, "optimizer state": state.opt_state, "batch": train_batch},
      examples * length,
      flops,
      notes,
      bert.scan_layers,
    ),
    Program(
      f"predict step ({kind}, seq {length}, batch {config.eval_batch_size})",
      finetune.make_predict_step(task.model, kind, mesh, rules, task.shardings.params),
      (state.params, predict_batch),
      {"params": state.params, "batch": predict_batch},
      config.eval_batch_size * length,
      0.0,
      notes,
      bert.scan_layers,
    ),
  ]


_EMBED_BATCH = 32  # PretrainedBert.encode's default batch


def _embed_programs(config, mesh, rules) -> list[Program]:
  """The embed job encodes on one device (PretrainedBert.encode): its forward, compiled for one chip."""
  from bert_jax.embed import bundled_minilm_path
  from bert_jax.models import BertModel
  from bert_jax.pretrained import read_config

  bert = read_config(config.model_path or bundled_minilm_path(), pooling=config.pooling)
  model = BertModel(bert)
  device = mesh.devices.flat[0]
  one = jax.sharding.SingleDeviceSharding(device)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
  import flax.linen as nn

  params = jax.tree.map(lambda a: _struct(a.shape, a.dtype, one), nn.meta.unbox(shapes))
  length = min(config.max_length, bert.max_position_embeddings)
  inputs = {k: _struct((_EMBED_BATCH, length), jnp.int32, one) for k in train_state.MODEL_INPUTS}

  def run(params, input_ids, attention_mask, token_type_ids):
    out = model.apply({"params": params}, input_ids, attention_mask, token_type_ids)
    return out["last_hidden_state"], out["pooler_output"]

  return [
    Program(
      f"encode (batch {_EMBED_BATCH}, seq {length}, one chip)",
      jax.jit(run),
      (params, *inputs.values()),
      {"params": params, "batch": inputs},
      _EMBED_BATCH * length,
      0.0,
      ["the embed job runs on one device"],
    )
  ]


def _flops(bert, length: int) -> float:
  from bert_jax import train

  return train.flops_per_token(bert, length)


_PROGRAMS = {"pretrain": _pretrain_programs, "finetune": _finetune_programs, "embed": _embed_programs}


def _process_count(mesh) -> int:
  return len({d.process_index for d in mesh.devices.flat})


# --- compiling and reading the result -------------------------------------------------------------


@contextlib.contextmanager
def _captured_stderr():
  """The C++ compiler logs to file descriptor 2 (e.g. the partitioner's rematerialization warnings): keep a
  copy of what it writes while compiling, and pass it through."""
  with tempfile.TemporaryFile(mode="w+b") as f:
    saved = os.dup(2)
    os.dup2(f.fileno(), 2)
    out: dict[str, str] = {}
    try:
      yield out
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      f.seek(0)
      out["text"] = f.read().decode("utf-8", "replace")


def compile_program(program: Program) -> tuple[Any, dict]:
  step = program.step
  jitted = getattr(step, "_jitted", step)
  context = (
    train_state.mesh_context(step.mesh, step.rules) if hasattr(step, "mesh") else contextlib.nullcontext()
  )
  start = time.perf_counter()
  compiled, refused = None, None
  with _captured_stderr() as log, context:
    lowered = jitted.lower(*program.args)
    try:
      compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
      # The TPU compiler itself refuses a program whose buffers exceed the chip's HBM: that is the answer.
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      refused = str(e).strip()
  seconds = time.perf_counter() - start
  return compiled, {"compile_seconds": seconds, "log": log["text"], "refused": refused}


def _apply_slices(config, target: topology.Slice):
  """A multi-slice target spans the data-center network: the mesh's dcn_* sizes must multiply to the slice
  count. A config that names none gets data parallelism across slices (dcn_data = slices)."""
  dcn = {a: config.mesh[f"dcn_{a}"] for a in sharding.MESH_AXES}
  if math.prod(dcn.values()) == target.slices:
    return None
  if math.prod(dcn.values()) == 1:
    with config.unlocked():
      config.mesh.dcn_data = target.slices
    return f"data parallel across the {target.slices} slices (config.mesh.dcn_data={target.slices})"
  raise sharding.ShardingError(
    f"--slices={target.slices} but config.mesh.dcn_* = {dcn} span {math.prod(dcn.values())} slices; make them agree"
  )


def compile_only(config, workdir: str, target_name: str, slices: int = 1) -> dict:
  """Compiles the config's job for a TPU target; prints and writes the report; returns it."""
  target = topology.parse(target_name, slices)
  if config.job not in _PROGRAMS:
    raise ValueError(f"compile-only runs take config.job in {sorted(_PROGRAMS)}, not {config.job!r}")
  devices = topology.devices(target)
  slice_note = _apply_slices(config, target) if target.slices > 1 else None
  if "mesh" in config:
    mesh, rules = sharding.from_config(config.mesh, devices=devices)
  else:  # the embed job: one device
    mesh, rules = sharding.make_mesh({"data": -1}, devices), sharding.rules_for("dp")
  programs = _PROGRAMS[config.job](config, mesh, rules)
  chip = target.chip
  results = []
  for program in programs:
    print(f"compiling {program.name} for {target.label} ...", flush=True)
    compiled, extra = compile_program(program)
    results.append(analyse(program, compiled, chip, len(devices), extra))
    if slice_note:
      results[-1]["notes"].append(slice_note)
  tips = []
  for result in results:
    if not result["hbm"]["fits"]:
      tips = advice(config, result)
      break
  report = {
    "job": config.job,
    "target": {
      "name": target.name,
      "jax_topology": target.jax_name,
      "slices": target.slices,
      "chips": len(devices),
      "hosts": _process_count(mesh),
      "chip": chip.name,
      "hbm_bytes": chip.hbm_bytes,
      "peak_bf16_flops": chip.peak_bf16_flops,
      "hbm_bandwidth": chip.hbm_bandwidth,
      "source": chip.source,
    },
    "mesh": dict(mesh.shape),
    "strategy": config.mesh.strategy if "mesh" in config else "one device",
    "versions": versions(),
    "programs": results,
    "fits": all(r["hbm"]["fits"] for r in results),
    "advice": tips,
  }
  text = markdown(report)
  print(text, flush=True)
  folder = os.path.join(workdir, "compile")
  files.write_json(os.path.join(folder, f"{target.label}.json"), report)
  files.write_text(os.path.join(folder, f"{target.label}.md"), text)
  print(f"report: {os.path.join(folder, target.label)}.json/.md", flush=True)
  return report


__all__ = ["EXIT_DOES_NOT_FIT", "Program", "collectives", "compile_only", "finetune_batch", "pretraining_batch"]

