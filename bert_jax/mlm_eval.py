"""Masked-LM accuracy of a checkpoint on TFRecord files of BERT pretraining examples: MLPerf BERT's metric.

The examples are those BERT's create_pretraining_data.py writes (MLPerf's eval_10k among them): fixed-length
`input_ids`, `input_mask`, `segment_ids` and, per example, `masked_lm_positions`, `masked_lm_ids` and
`masked_lm_weights` (1.0 for a real prediction, 0.0 for padding). As MLPerf's reference run_pretraining.py
computes it (`tf.metrics.accuracy(labels=masked_lm_ids, predictions=argmax(log_probs), weights=
masked_lm_weights)`, streamed over every evaluation batch), the accuracy is

    sum over all predictions of weight * [argmax of the MLM logits == masked_lm_id] / sum of weights

over the whole evaluation set, not a mean of per-batch accuracies. Records are read with the TF-free reader
(tfrecord.py); the model runs sharded over the config's mesh, each process feeding its rows of every batch.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Iterator
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import distributed, files, sharding, tfrecord, train_state
from bert_jax.models import BertConfig, BertForPreTraining

# Feature name -> tf.train.Feature kind, as create_pretraining_data.py writes them.
FEATURES = {
  "input_ids": "int64_list",
  "input_mask": "int64_list",
  "segment_ids": "int64_list",
  "masked_lm_positions": "int64_list",
  "masked_lm_ids": "int64_list",
  "masked_lm_weights": "float_list",
}
_PER_TOKEN = ("input_ids", "input_mask", "segment_ids")
_PER_PREDICTION = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
RESULT_FILE = "result.json"


class EvalDataError(ValueError):
  pass


def expand_files(spec: str) -> list[str]:
  """Comma-separated paths or glob patterns -> files, in the order given (a pattern's matches sorted)."""
  parts = [p.strip() for p in spec.split(",") if p.strip()]
  if not parts:
    raise ValueError(
      "config.data.eval_files is empty: give the TFRecord file(s) of pretraining examples to score, e.g. "
      "--config.data.eval_files=PATH/eval_10k"
    )
  found: list[str] = []
  for part in parts:
    files.require_local(part, "--config.data.eval_files")
    part = os.path.expanduser(part)
    if glob.has_magic(part):
      matches = sorted(p for p in glob.glob(part) if os.path.isfile(p))
      if not matches:
        raise FileNotFoundError(f"config.data.eval_files: the pattern {part!r} matches no file")
      found.extend(matches)
    elif os.path.isfile(part):
      found.append(part)
    else:
      raise FileNotFoundError(f"config.data.eval_files: {part!r}: no such file")
  return list(dict.fromkeys(found))


def _check_example(features: dict, where: str, shape: dict[str, int] | None, bert) -> dict[str, np.ndarray]:
  """One parsed example's arrays, checked against the features BERT's pretraining examples carry, the first
  example's lengths and the model's vocabulary and positions."""
  missing = [name for name in FEATURES if name not in features]
  if missing:
    raise EvalDataError(
      f"{where}: no feature {', '.join(map(repr, missing))}; the record has {sorted(features)}. Expected BERT "
      f"pretraining examples (create_pretraining_data.py) with {list(FEATURES)}"
    )
  row = {}
  for name, kind in FEATURES.items():
    got = tfrecord.feature_kind(features[name])
    if got != kind:
      raise EvalDataError(f"{where}: feature {name!r} is a {got}; expected a {kind}")
    row[name] = features[name]
  for what, names in (("max_seq_length", _PER_TOKEN), ("max_predictions_per_seq", _PER_PREDICTION)):
    want = shape[what] if shape else len(row[names[0]])
    wrong = {n: len(row[n]) for n in names if len(row[n]) != want}
    if wrong or not want:
      lengths = {n: len(row[n]) for n in names}
      raise EvalDataError(
        f"{where}: {names} must all hold {what} = {want or 'at least 1'} values (as "
        f"{'the first example' if shape else names[0]}); lengths {lengths}"
      )
  seq_len = len(row["input_ids"])
  if seq_len > bert.max_position_embeddings:
    raise EvalDataError(
      f"{where}: examples of {seq_len} tokens, but the model has {bert.max_position_embeddings} positions"
    )
  for name, limit, what in (
    ("input_ids", bert.vocab_size, "vocabulary"),
    ("masked_lm_ids", bert.vocab_size, "vocabulary"),
    ("segment_ids", bert.type_vocab_size, "type_vocab_size"),
    ("masked_lm_positions", seq_len, "example length"),
  ):
    bad = np.flatnonzero((row[name] < 0) | (row[name] >= limit))
    if bad.size:
      raise EvalDataError(
        f"{where}: {name}[{bad[0]}] = {row[name][bad[0]]} is outside [0, {limit}) (the model's {what})"
      )
  return row


def examples(paths: list[str], max_examples: int, compression: str, bert) -> Iterator[tuple[str, dict]]:
  """(file, checked arrays) for each example, in file order, at most max_examples (0: all)."""
  shape = None
  for count, (path, record, features) in enumerate(tfrecord.read_examples(paths, compression=compression)):
    if max_examples and count >= max_examples:
      return
    where = f"{path}: record {record.index} (byte offset {record.offset})"
    row = _check_example(features, where, shape, bert)
    if shape is None:
      shape = {"max_seq_length": len(row["input_ids"]), "max_predictions_per_seq": len(row["masked_lm_ids"])}
    yield path, row


def _batches(rows: Iterator[tuple[str, dict]], batch_size: int, per_file: dict[str, int]):
  """Global batches of `batch_size` rows; the last padded with copies of its first row at weight 0, which
  add nothing to either sum."""
  chunk: list[dict] = []
  for path, row in rows:
    per_file[path] = per_file.get(path, 0) + 1
    chunk.append(row)
    if len(chunk) == batch_size:
      yield _stack(chunk)
      chunk = []
  if chunk:
    filler = dict(chunk[0], masked_lm_weights=np.zeros_like(chunk[0]["masked_lm_weights"]))
    yield _stack(chunk + [filler] * (batch_size - len(chunk)))


def _stack(chunk: list[dict]) -> dict[str, np.ndarray]:
  return {
    "input_ids": np.stack([r["input_ids"] for r in chunk]).astype(np.int32),
    "attention_mask": np.stack([r["input_mask"] for r in chunk]).astype(np.int32),
    "token_type_ids": np.stack([r["segment_ids"] for r in chunk]).astype(np.int32),
    "masked_positions": np.stack([r["masked_lm_positions"] for r in chunk]).astype(np.int32),
    "masked_ids": np.stack([r["masked_lm_ids"] for r in chunk]).astype(np.int32),
    "masked_weights": np.stack([r["masked_lm_weights"] for r in chunk]).astype(np.float32),
  }


def make_accuracy_step(model, mesh, rules, param_shardings) -> train_state.ShardedStep:
  """(params, batch) -> (sum of weights where the argmax is the masked id, sum of weights) of the batch."""

  def step(params, batch):
    out = model.apply(
      {"params": params},
      batch["input_ids"],
      batch["attention_mask"],
      batch["token_type_ids"],
      masked_positions=batch["masked_positions"],
      deterministic=True,
    )
    # argmax of the logits is argmax of their log-softmax (the reference's), first index on ties as tf.argmax.
    predictions = jnp.argmax(out["mlm_logits"].astype(jnp.float32), axis=-1)
    weights = batch["masked_weights"]
    return jnp.sum(weights * (predictions == batch["masked_ids"])), jnp.sum(weights)

  return train_state.ShardedStep(
    step,
    mesh,
    rules,
    in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
    out_shardings=NamedSharding(mesh, PartitionSpec()),
  )


class Scorer(NamedTuple):
  bert: BertConfig
  model: nn.Module
  params: dict  # laid out on the mesh
  shardings: dict
  source: str  # the weights file read


def load_scorer(config, mesh, rules) -> Scorer:
  """The checkpoint's encoder and masked-LM head, laid out on the mesh by the logical-axis rules."""
  from bert_jax.pretrained import load_weights

  if not config.init_from:
    raise ValueError(
      "config.init_from is empty: give the checkpoint to score (a Google TF checkpoint folder or prefix, a "
      "HuggingFace or bert_jax folder)"
    )
  if config.model_config:
    files.require_local(config.model_config, "--config.model_config")
  m = config.model
  bert, params, source = load_weights(
    config.init_from,
    heads=True,
    config_file=config.model_config,
    dtype=m.dtype,
    param_dtype=m.param_dtype,
    hidden_act=m.hidden_act or None,
    attention=m.attention,
  )
  params = {k: v for k, v in params.items() if k in ("bert", "mlm")}  # NSP is not scored
  model = BertForPreTraining(bert, nsp=False)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  shardings = sharding.logical_sharding(nn.get_partition_spec(abstract), mesh, rules)
  sharding.check_divisible(nn.meta.unbox(abstract), shardings)
  return Scorer(bert, model, jax.device_put(params, shardings), shardings, source)


def run(config, workdir: str) -> dict:
  """Scores config.init_from on config.data.eval_files; writes workdir/result.json and returns its content."""
  paths = expand_files(config.data.eval_files)
  if distributed.is_primary():
    # What the run was asked for, as every job records it: a gathered paper table checks it (paper_table.py).
    files.write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
  mesh, rules = sharding.from_config(config.mesh)
  sharding.check_batch(config.batch_size, mesh)
  scorer = load_scorer(config, mesh, rules)
  mine = sharding.process_rows(mesh, config.batch_size)
  step = make_accuracy_step(scorer.model, mesh, rules, scorer.shardings)
  start = time.time()
  per_file: dict[str, int] = {}
  sums, shape = [], None
  rows = examples(paths, config.max_examples, config.data.compression, scorer.bert)
  for batch in _batches(rows, config.batch_size, per_file):
    shape = (batch["input_ids"].shape[1], batch["masked_ids"].shape[1])
    # Dispatch is asynchronous: the next batch is read while this one runs.
    sums.append(step(scorer.params, sharding.global_batch({k: v[mine] for k, v in batch.items()}, mesh)))
  if shape is None:
    raise EvalDataError(f"config.data.eval_files: {paths} hold no records")
  sums = np.asarray(jax.device_get(sums), dtype=np.float64)  # (batches, 2): exact for whole-number weights
  correct, weight = float(sums[:, 0].sum()), float(sums[:, 1].sum())
  if not weight:
    raise EvalDataError(f"{paths}: every masked_lm_weights is 0: there is no masked token to score")
  result = {
    "masked_lm_accuracy": correct / weight,
    "masked_lm_correct": correct,
    "masked_lm_weight": weight,  # the number of masked tokens scored (the sum of their weights)
    "examples": sum(per_file.values()),
    "checkpoint": scorer.source,
    "init_from": config.init_from,
    "model_config": config.model_config,
    "eval_files": [{"path": os.path.abspath(p), "examples": per_file[p]} for p in paths if p in per_file],
    "max_seq_length": shape[0],
    "max_predictions_per_seq": shape[1],
    "batch_size": config.batch_size,
    "dtype": scorer.bert.dtype,
    "hidden_act": scorer.bert.hidden_act,
    "seconds": round(time.time() - start, 3),
  }
  if distributed.is_primary():
    files.write_json(os.path.join(workdir, RESULT_FILE), result)
    print(json.dumps(result, indent=2), flush=True)
    print(
      f"masked_lm_accuracy {correct / weight:.5f}: {correct:.0f} of {weight:.0f} masked tokens in "
      f"{result['examples']} examples; {scorer.source} -> {os.path.join(workdir, RESULT_FILE)}",
      flush=True,
    )
  return result
