"""The model a fine-tuning run trains: the pretrained encoder `config.init_from` points at (loaded with the
run's overrides), the task head over it with BERT's fine-tuning optimizer, the encoder's weights copied
into the freshly initialised task model, and the task description exported with it."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax import hub, objectives, optim, train_state
from bert_jax.data import finetune_data
from bert_jax.models import BertConfig, task_model
from bert_jax.run_control import TrainingError, host_tree

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


# --- the task model ----------------------------------------------------------------------------


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


def task_info(config, data: finetune_data.TaskData, bert: BertConfig, extra: dict | None = None) -> dict:
  """What the Predictor reads with the exported task model: the task, its labels and input windows."""
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
