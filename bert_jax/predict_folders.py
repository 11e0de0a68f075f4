"""Fine-tuned model folders, read and written for the Predictor: a bert_jax export (bert_jax_config.json
with a "task" entry, params.safetensors, tokenizer files) or a HuggingFace BertFor<Task> folder, read as
(model config, parameter tree, task); and the errors the Predictor raises.
"""

from __future__ import annotations

import os

from bert_jax import convert

HF_ARCHITECTURES = {
  "BertForSequenceClassification": "classification",
  "BertForTokenClassification": "tagging",
  "BertForQuestionAnswering": "span",
  "BertForMultipleChoice": "choice",
}


# The architecture each task is saved as (regression: BertForSequenceClassification with one label).
HF_FOR_KIND = {kind: name for name, kind in HF_ARCHITECTURES.items()} | {
  "regression": "BertForSequenceClassification"
}


class PredictorError(ValueError):
  pass


class NoTaskHead(PredictorError):
  """The folder holds a pretrained encoder (or a checkpoint without a fine-tuned head)."""


# --- fine-tuned model folders ------------------------------------------------------------------


def save_task_model(directory: str, bert, params: dict, tokenizer, task: dict) -> None:
  """Writes a fine-tuned model: the parameter tree (encoder + head), the model config and the task
  (kind, label names, sequence length, metric, SQuAD settings) for the Predictor."""
  from bert_jax.pretrained import write_bert_jax_folder

  write_bert_jax_folder(directory, bert, params, tokenizer, task=task)


def read_task_folder(path: str):
  """(config, params, task) of a fine-tuned model folder, whichever of the two formats it is in."""
  from bert_jax.pretrained import detect_format

  kind = detect_format(path)
  if kind == "bert_jax":
    return _read_bert_jax(path)
  if kind == "huggingface":
    return _read_huggingface(path)
  raise NoTaskHead(f"{path}: a Google pretraining checkpoint has no fine-tuned task head")


def _read_bert_jax(path: str):
  from safetensors.numpy import load_file

  from bert_jax.models import BertConfig
  from bert_jax.models.config import read_json
  from bert_jax.pretrained import BERT_JAX_CONFIG, BERT_JAX_PARAMS

  config_path = os.path.join(path, BERT_JAX_CONFIG)
  meta = read_json(config_path)
  task = meta.get("task")
  if not isinstance(task, dict) or "kind" not in task:
    raise NoTaskHead(
      f"{config_path}: no fine-tuned task in this folder (a pretrained encoder); use "
      "bert_jax.from_pretrained for embeddings, or fine-tune it first (configs/finetune.py)"
    )
  config = BertConfig.from_dict(meta["model"], source=config_path)
  return config, convert.unflatten(load_file(os.path.join(path, BERT_JAX_PARAMS))), task


def _read_huggingface(path: str):
  from bert_jax.models import BertConfig
  from bert_jax.models.config import read_json

  config_path = os.path.join(path, "config.json")
  hf = read_json(config_path)
  architectures = [a for a in hf.get("architectures") or [] if a in HF_ARCHITECTURES]
  if not architectures:
    raise NoTaskHead(
      f"{config_path}: architectures={hf.get('architectures')} has no task head; the Predictor serves "
      f"{sorted(HF_ARCHITECTURES)} (use bert_jax.from_pretrained for a bare encoder)"
    )
  kind = HF_ARCHITECTURES[architectures[0]]
  config = BertConfig.from_hf_dict(hf, source=config_path)
  state, source = convert.read_hf_weights(path)
  id2label = hf.get("id2label") or {}
  # transformers 5 leaves id2label (and num_labels) out of config.json when they are its defaults:
  # the classifier's rows say how many labels there are.
  classifier = state.get("classifier.weight")
  count = len(id2label) or (classifier.shape[0] if classifier is not None else int(hf.get("num_labels", 2)))
  labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]
  if kind == "classification" and (hf.get("problem_type") == "regression" or len(labels) == 1):
    kind, labels = "regression", []
  params = convert.hf_to_params(state, config, source=source)
  max_len = int(hf.get("max_position_embeddings", 512))
  task = {
    "kind": kind,
    "labels": labels if kind in ("classification", "tagging") else [],
    "max_seq_length": max_len,
  }
  if kind == "span":
    task["squad"] = {
      "version_2": False,
      "n_best": 20,
      "max_answer_length": 30,
      "null_score_diff_threshold": 0.0,
    }
  return config, params, task
