"""Fine-tuning's evaluation: the model's outputs for every example (run by length bucket, or packed) and
the task's official metric on each evaluation set."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import batching, metrics, sharding, train_state
from bert_jax.data import finetune_data, packing, squad, tasks
from bert_jax.finetune_batches import pack_rows, pad_rows, take_rows

OUTPUT_KEYS = {"span": ("start_logits", "end_logits")}

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
    batch = pad_rows(take_rows(inputs, np.arange(start, min(start + batch_size, n))), batch_size)
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
