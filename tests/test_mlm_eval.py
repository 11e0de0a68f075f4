"""The mlm_eval job (MLPerf BERT's masked-LM accuracy) against HuggingFace's BertForPreTraining in torch.

The checkpoint is tests/data/google_bert_tiny, written by TensorFlow under Google's names with the MLM
head; its hf/ copy holds the same weights for transformers. The evaluation examples are written in the
layout of BERT's create_pretraining_data.py by an independent writer (tensorboardX framing, protobuf
serialization from a descriptor built in tests/test_tfrecord.py), and the accuracy the job reports is
compared with the weighted accuracy computed here from torch's logits.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import transformers

from bert_jax import mlm_eval, pretrained, stages, tf_checkpoint
from bert_jax.convert import ConversionError, flatten
from bert_jax.tfrecord import TFRecordError
from configs import mlm_eval as mlm_eval_config
from tests.test_tf_checkpoint import FIXTURE, write_table
from tests.test_tfrecord import serialize, write_records

SEQ, PREDS, VOCAB = 16, 5, 120


@pytest.fixture(scope="module")
def instances():
  """Pretraining examples as create_pretraining_data.py lays them out (0-padded to SEQ tokens and PREDS
  predictions, weight 0.0 on padded predictions), with torch's MLM logits at every masked position; about
  half the masked ids are set to torch's argmax so that the accuracy is far from 0 and 1."""
  rng = np.random.default_rng(0)
  rows = []
  for i in range(11):
    length = int(rng.integers(8, SEQ + 1))
    ids = np.zeros(SEQ, np.int64)
    ids[:length] = rng.integers(5, VOCAB, length)
    segments = np.zeros(SEQ, np.int64)
    segments[length // 2 : length] = 1
    count = int(rng.integers(1, PREDS + 1)) if i else PREDS
    positions = np.zeros(PREDS, np.int64)
    positions[:count] = np.sort(rng.choice(np.arange(1, length), count, replace=False))
    weights = np.zeros(PREDS, np.float32)
    weights[:count] = 1.0
    mask = np.zeros(SEQ, np.int64)
    mask[:length] = 1
    rows.append(
      {
        "input_ids": ids,
        "input_mask": mask,
        "segment_ids": segments,
        "positions": positions,
        "weights": weights,
      }
    )
  model = transformers.BertForPreTraining.from_pretrained(str(FIXTURE / "hf")).eval()
  with torch.no_grad():
    logits = model(
      input_ids=torch.tensor(np.stack([r["input_ids"] for r in rows])),
      attention_mask=torch.tensor(np.stack([r["input_mask"] for r in rows])),
      token_type_ids=torch.tensor(np.stack([r["segment_ids"] for r in rows])),
    ).prediction_logits.numpy()
  for i, row in enumerate(rows):
    at = logits[i, row["positions"]]  # (PREDS, VOCAB)
    top2 = np.sort(at, axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 1e-4).all(), "a near tie would make the reference's argmax fragile"
    argmax = at.argmax(-1)
    labels = np.where(rng.random(PREDS) < 0.5, argmax, rng.integers(5, VOCAB, PREDS))
    labels[row["weights"] == 0] = 0  # as the reference pads them
    labels[(row["weights"] == 0) & (argmax == 0)] = 1  # a padded prediction never counts, right or not
    row.update(labels=labels, argmax=argmax)
  return rows


def reference_accuracy(rows) -> tuple[float, float]:
  correct = sum(float((r["weights"] * (r["argmax"] == r["labels"])).sum()) for r in rows)
  weight = sum(float(r["weights"].sum()) for r in rows)
  return correct, weight


def record(row, drop: str = "") -> bytes:
  features = {
    "input_ids": row["input_ids"],
    "input_mask": row["input_mask"],
    "segment_ids": row["segment_ids"],
    "masked_lm_positions": row["positions"],
    "masked_lm_ids": row["labels"],
    "masked_lm_weights": row["weights"],
    "next_sentence_labels": np.array([0]),
  }
  return serialize({k: v for k, v in features.items() if k != drop})


def config_for(init_from, eval_files, **overrides):
  config = mlm_eval_config.get_config()
  config.init_from = str(init_from)
  config.data.eval_files = eval_files
  for key, value in overrides.items():
    config[key] = value
  return config


def test_accuracy_matches_transformers(tmp_path, instances):
  # Two files, one named by a glob; 11 examples in global batches of 8: the last batch is padded.
  write_records(tmp_path / "part-00000", [record(r) for r in instances[:6]])
  write_records(tmp_path / "part-00001", [record(r) for r in instances[6:]])
  result = stages.run_job(config_for(FIXTURE, str(tmp_path / "part-*")), str(tmp_path / "out"))
  correct, weight = reference_accuracy(instances)
  assert 0.2 < correct / weight < 0.8
  assert result["masked_lm_accuracy"] == correct / weight
  assert (result["masked_lm_correct"], result["masked_lm_weight"], result["examples"]) == (
    correct,
    weight,
    11,
  )
  written = json.loads((tmp_path / "out" / "result.json").read_text())
  assert written["masked_lm_accuracy"] == result["masked_lm_accuracy"]
  assert [f["examples"] for f in written["eval_files"]] == [6, 5]
  assert written["checkpoint"] == str(FIXTURE / "bert_model.ckpt")
  assert (written["max_seq_length"], written["max_predictions_per_seq"]) == (SEQ, PREDS)

  # max_examples takes the first examples in file order.
  result = stages.run_job(
    config_for(FIXTURE, f"{tmp_path / 'part-00000'},{tmp_path / 'part-00001'}", max_examples=3),
    str(tmp_path / "out3"),
  )
  correct, weight = reference_accuracy(instances[:3])
  assert (result["masked_lm_accuracy"], result["examples"]) == (correct / weight, 3)


def test_mlperf_layout_prefix_and_config_apart(tmp_path):
  # MLPerf ships tf1_ckpt/model.ckpt-28252.* with bert_config.json beside the folder, not in it.
  ckpt = tmp_path / "tf1_ckpt"
  ckpt.mkdir()
  for suffix in (".index", ".data-00000-of-00001"):
    shutil.copy(FIXTURE / f"bert_model.ckpt{suffix}", ckpt / f"model.ckpt-28252{suffix}")
  shutil.copy(FIXTURE / "bert_config.json", tmp_path / "bert_config.json")
  want_config, want, _ = pretrained.load_weights(FIXTURE, heads=True)
  for path in (ckpt / "model.ckpt-28252", ckpt):
    config, params, source = pretrained.load_weights(
      path, heads=True, config_file=tmp_path / "bert_config.json"
    )
    assert source == str(ckpt / "model.ckpt-28252") and config == want_config
    got, expected = flatten(params), flatten(want)
    assert sorted(got) == sorted(expected)
    for k in expected:
      np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(expected[k]), err_msg=k)
  with pytest.raises(FileNotFoundError, match=r"tf1_ckpt/bert_config.json: no such file.*model_config"):
    pretrained.load_weights(ckpt / "model.ckpt-28252", heads=True)
  # configs/mlm_eval.py:mlperf computes "gelu" as MLPerf's modeling.py does: with tanh.
  mlperf = mlm_eval_config.get_config("mlperf")
  assert (mlperf.model.hidden_act, mlperf.max_examples) == ("gelu_tanh", 10_000)
  config, _, _ = pretrained.load_weights(
    ckpt, config_file=tmp_path / "bert_config.json", hidden_act="gelu_tanh"
  )
  assert config.activation == "gelu_tanh"


# --- bad input -----------------------------------------------------------------------------------


def test_missing_feature_names_it_and_the_features_present(tmp_path, instances):
  write_records(tmp_path / "eval", [record(instances[0]), record(instances[1], drop="masked_lm_weights")])
  with pytest.raises(
    mlm_eval.EvalDataError,
    match=r"eval: record 1 \(byte offset \d+\): no feature 'masked_lm_weights'; the record has \['input_ids', "
    r"'input_mask', 'masked_lm_ids', 'masked_lm_positions', 'next_sentence_labels', 'segment_ids'\]",
  ):
    stages.run_job(config_for(FIXTURE, str(tmp_path / "eval")), str(tmp_path / "out"))


def test_corrupt_record_names_file_and_record(tmp_path, instances):
  path = tmp_path / "eval"
  offsets = write_records(path, [record(r) for r in instances[:3]])
  raw = bytearray(path.read_bytes())
  raw[offsets[2] + 40] ^= 0xFF
  path.write_bytes(bytes(raw))
  with pytest.raises(TFRecordError, match=rf"{path}: record 2 \(byte offset {offsets[2]}\).*checksum"):
    stages.run_job(config_for(FIXTURE, str(path)), str(tmp_path / "out"))


def test_out_of_vocabulary_id_and_bad_lengths(tmp_path, instances):
  bad = dict(instances[1], labels=np.full(PREDS, VOCAB))
  write_records(tmp_path / "oov", [record(instances[0]), record(bad)])
  with pytest.raises(
    mlm_eval.EvalDataError, match=r"oov: record 1 .*masked_lm_ids\[0\] = 120 is outside \[0, 120\)"
  ):
    stages.run_job(config_for(FIXTURE, str(tmp_path / "oov")), str(tmp_path / "out"))
  short = dict(instances[1], segment_ids=instances[1]["segment_ids"][:-1])
  write_records(tmp_path / "short", [record(instances[0]), record(short)])
  with pytest.raises(mlm_eval.EvalDataError, match=r"short: record 1 .*'segment_ids': 15"):
    stages.run_job(config_for(FIXTURE, str(tmp_path / "short")), str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match=r"the pattern .*nothing-\*' matches no file"):
    mlm_eval.expand_files(str(tmp_path / "nothing-*"))


@pytest.fixture(scope="module")
def tf_entries():
  return list(tf_checkpoint._table_entries(f"{FIXTURE}/bert_model.ckpt.index"))


def test_checkpoint_without_mlm_head_names_missing_variables(tmp_path, tf_entries, instances):
  # The TF checkpoint re-indexed without cls/predictions/*: an encoder (and NSP head) alone.
  folder = tmp_path / "no_head"
  folder.mkdir()
  shutil.copy(FIXTURE / "bert_model.ckpt.data-00000-of-00001", folder)
  shutil.copy(FIXTURE / "bert_config.json", folder)
  kept = [
    (k, v) for k, v in tf_entries if not k.startswith((b"cls/predictions/output_bias", b"cls/predictions/t"))
  ]
  write_table(folder / "bert_model.ckpt.index", kept, per_block=50)
  write_records(tmp_path / "eval", [record(instances[0])])
  with pytest.raises(
    ConversionError,
    match=r"no_head/bert_model.ckpt: the checkpoint has no complete masked-LM head: missing "
    r"\['cls/predictions/transform/dense/kernel', 'cls/predictions/transform/dense/bias', "
    r"'cls/predictions/transform/LayerNorm/gamma', 'cls/predictions/transform/LayerNorm/beta', "
    r"'cls/predictions/output_bias'\]",
  ):
    stages.run_job(config_for(folder, str(tmp_path / "eval")), str(tmp_path / "out"))
  # Only the output bias missing: named alone.
  kept = [(k, v) for k, v in tf_entries if not k.startswith(b"cls/predictions/output_bias")]
  write_table(folder / "bert_model.ckpt.index", kept, per_block=50)
  with pytest.raises(ConversionError, match=r"missing \['cls/predictions/output_bias'\]"):
    pretrained.load_weights(folder, heads=True)


def test_encoder_only_huggingface_folder_names_hf_weights(tmp_path):
  model = transformers.BertModel(transformers.BertConfig.from_pretrained(str(FIXTURE / "hf")))
  model.save_pretrained(str(tmp_path / "encoder"))
  with pytest.raises(
    ConversionError, match=r"missing \['cls.predictions.transform.dense.weight', .*'cls.predictions.bias'\]"
  ):
    pretrained.load_weights(tmp_path / "encoder", heads=True)


def test_job_is_listed():
  assert "mlm_eval" in stages.JOBS
  config = mlm_eval_config.get_config()
  with pytest.raises(AttributeError):
    config.data.eval_file = "x"  # locked: a misspelled field fails
