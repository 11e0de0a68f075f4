"""Makes this folder: a tiny random BERT saved by HuggingFace and, with the same weights, as an
original-Google-style TensorFlow checkpoint written by real TensorFlow.

The tests never run this; they read what it wrote. It runs in two environments because the
project's environment must stay free of TensorFlow:

  # 1. the project's environment (transformers + torch): hf/, vocab.txt, bert_config.json
  .venv/bin/python tests/data/google_bert_tiny/make_fixture.py hf
  # 2. a scratch environment with TensorFlow: bert_model.ckpt.* and dtypes/
  python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 safetensors
  /tmp/tfenv/bin/python tests/data/google_bert_tiny/make_fixture.py tf
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
HF_DIR = os.path.join(HERE, "hf")
DTYPES_DIR = os.path.join(HERE, "dtypes")

# Laid out like Google's vocabularies: [PAD], unused slots, the four special tokens, then words and
# WordPiece continuations.
SPECIAL = ["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """. , ! ? ' " - ( ) : ; the a an of to and in is it that was for on with as he she they
we you i his her be at by this had not are but from or have one all were there when what which
their said so if do will about up out time can no them some would make like into him has two
more see could go way than first been who its now people my made over did down only call find
new long day get come many use work ##s ##ed ##ing ##ly ##er ##est ##es ##en ##ion""".split()
VOCAB = SPECIAL + WORDS
assert len(VOCAB) == 120 and len(set(VOCAB)) == len(VOCAB), len(VOCAB)

NUM_LAYERS = 2


def hf_to_google() -> dict[str, tuple[str, bool]]:
  """HuggingFace weight name -> (Google's TF variable name, whether TF stores it transposed)."""
  names = {
    "bert.embeddings.word_embeddings.weight": ("bert/embeddings/word_embeddings", False),
    "bert.embeddings.token_type_embeddings.weight": ("bert/embeddings/token_type_embeddings", False),
    "bert.embeddings.position_embeddings.weight": ("bert/embeddings/position_embeddings", False),
    "bert.embeddings.LayerNorm.weight": ("bert/embeddings/LayerNorm/gamma", False),
    "bert.embeddings.LayerNorm.bias": ("bert/embeddings/LayerNorm/beta", False),
    "bert.pooler.dense.weight": ("bert/pooler/dense/kernel", True),
    "bert.pooler.dense.bias": ("bert/pooler/dense/bias", False),
    "cls.predictions.transform.dense.weight": ("cls/predictions/transform/dense/kernel", True),
    "cls.predictions.transform.dense.bias": ("cls/predictions/transform/dense/bias", False),
    "cls.predictions.transform.LayerNorm.weight": ("cls/predictions/transform/LayerNorm/gamma", False),
    "cls.predictions.transform.LayerNorm.bias": ("cls/predictions/transform/LayerNorm/beta", False),
    "cls.predictions.bias": ("cls/predictions/output_bias", False),
    # Google's NSP classifier is a bare matmul with weights stored (out, in), like torch.
    "cls.seq_relationship.weight": ("cls/seq_relationship/output_weights", False),
    "cls.seq_relationship.bias": ("cls/seq_relationship/output_bias", False),
  }
  for i in range(NUM_LAYERS):
    hf, tf = f"bert.encoder.layer.{i}.", f"bert/encoder/layer_{i}/"
    for part in [
      "attention.self.query",
      "attention.self.key",
      "attention.self.value",
      "attention.output.dense",
      "intermediate.dense",
      "output.dense",
    ]:
      names[hf + part + ".weight"] = (tf + part.replace(".", "/") + "/kernel", True)
      names[hf + part + ".bias"] = (tf + part.replace(".", "/") + "/bias", False)
    for part in ["attention.output.LayerNorm", "output.LayerNorm"]:
      names[hf + part + ".weight"] = (tf + part.replace(".", "/") + "/gamma", False)
      names[hf + part + ".bias"] = (tf + part.replace(".", "/") + "/beta", False)
  return names


def make_hf() -> None:
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.BertConfig(
    vocab_size=len(VOCAB),
    hidden_size=32,
    num_hidden_layers=NUM_LAYERS,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    initializer_range=0.02,
  )
  model = transformers.BertForPreTraining(config).eval()
  with torch.no_grad():
    # Default inits leave LayerNorm at ones/zeros and biases at zero, which would hide a gamma/beta
    # swap or a bias read from the wrong tensor.
    for name, param in model.named_parameters():
      if name.endswith("LayerNorm.weight"):
        param.copy_(1.0 + 0.2 * torch.randn_like(param))
      elif name.endswith(".bias"):
        param.copy_(0.1 * torch.randn_like(param))
  if os.path.isdir(HF_DIR):
    shutil.rmtree(HF_DIR)
  model.save_pretrained(HF_DIR)
  with open(os.path.join(HERE, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("".join(token + "\n" for token in VOCAB))
  google_config = {
    k: getattr(config, k)
    for k in [
      "attention_probs_dropout_prob",
      "hidden_act",
      "hidden_dropout_prob",
      "hidden_size",
      "initializer_range",
      "intermediate_size",
      "max_position_embeddings",
      "num_attention_heads",
      "num_hidden_layers",
      "type_vocab_size",
      "vocab_size",
    ]
  }
  with open(os.path.join(HERE, "bert_config.json"), "w", encoding="utf-8") as f:
    json.dump(google_config, f, indent=2, sort_keys=True)
    f.write("\n")


def make_tf() -> None:
  import tensorflow as tf
  from safetensors.numpy import load_file

  tf.compat.v1.disable_v2_behavior()
  v1 = tf.compat.v1
  hf = load_file(os.path.join(HF_DIR, "model.safetensors"))
  weights = {}
  for hf_name, (tf_name, transposed) in hf_to_google().items():
    weights[tf_name] = np.ascontiguousarray(hf[hf_name].T if transposed else hf[hf_name])

  for stale in os.listdir(HERE):
    if stale.startswith("bert_model.ckpt") or stale == "checkpoint":
      os.remove(os.path.join(HERE, stale))
  with tf.Graph().as_default():
    for name, value in weights.items():
      v1.get_variable(name, initializer=tf.constant(value))
    # Google's releases keep the Adam slots (and so weigh three times the model); their values
    # here are exact functions of the weight so the tests can check them too.
    for name, value in weights.items():
      v1.get_variable(name + "/adam_m", initializer=tf.constant(value / np.float32(-4)), trainable=False)
      v1.get_variable(name + "/adam_v", initializer=tf.constant(value * value), trainable=False)
    step = v1.train.get_or_create_global_step()
    saver = v1.train.Saver(save_relative_paths=True)
    with v1.Session() as sess:
      sess.run(v1.global_variables_initializer())
      sess.run(step.assign(12345))
      saver.save(sess, os.path.join(HERE, "bert_model.ckpt"), write_meta_graph=False)
  make_tf_dtypes(tf)


def make_tf_dtypes(tf) -> None:
  """A second checkpoint: one variable per dtype, two data shards, and things a reader must refuse."""
  v1 = tf.compat.v1
  if os.path.isdir(DTYPES_DIR):
    shutil.rmtree(DTYPES_DIR)
  os.makedirs(DTYPES_DIR)
  # Values every dtype holds exactly, so the expected arrays need no rounding rules.
  on_cpu0 = {
    "bfloat16": ([[1.5, -2.25, 0.0078125], [256.0, -0.5, 3.0]], tf.bfloat16),
    "float16": ([0.5, -1.25, 65504.0], tf.float16),
    "float64": ([1.0 / 3.0, -2.5e300], tf.float64),
    "int32": ([[-2147483648, 2147483647], [0, -1]], tf.int32),
    "nested/scope/int64": (2**40 + 3, tf.int64),
    "bool": ([True, False, True], tf.bool),
  }
  on_cpu1 = {
    "int8": ([-128, 127, 0], tf.int8),
    "uint8": ([0, 255, 7], tf.uint8),
    "int16": ([-32768, 32767], tf.int16),
    "float32_scalar": (-7.25, tf.float32),
    "float32_empty": (np.zeros([0, 4]), tf.float32),
    "unsupported/string": (b"not a number", tf.string),
  }
  with tf.Graph().as_default():
    # Two devices make the sharded Saver write two data files and merge their indexes into one.
    with tf.device("/cpu:0"):
      for name, (value, dtype) in on_cpu0.items():
        v1.get_variable(name, initializer=tf.constant(value, dtype=dtype))
    with tf.device("/cpu:1"):
      for name, (value, dtype) in on_cpu1.items():
        v1.get_variable(name, initializer=tf.constant(value, dtype=dtype))
      v1.get_variable(
        "unsupported/partitioned",
        shape=[4, 2],
        dtype=tf.float32,
        initializer=v1.ones_initializer(),
        partitioner=v1.fixed_size_partitioner(2),
      )
    saver = v1.train.Saver(sharded=True, save_relative_paths=True)
    config = v1.ConfigProto(device_count={"CPU": 2})
    with v1.Session(config=config) as sess:
      sess.run(v1.global_variables_initializer())
      saver.save(sess, os.path.join(DTYPES_DIR, "model.ckpt"), write_meta_graph=False)


if __name__ == "__main__":
  if sys.argv[1:] == ["hf"]:
    make_hf()
  elif sys.argv[1:] == ["tf"]:
    make_tf()
  else:
    sys.exit(f"usage: {sys.argv[0]} hf|tf (see the docstring)")
