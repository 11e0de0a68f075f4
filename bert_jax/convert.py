"""Checkpoint conversion: HuggingFace BERT (safetensors / torch .bin) and Google's original TF
checkpoints <-> bert_jax parameter trees.

One table (`_LAYER_RULES`, `_GLOBAL_RULES`) names every HuggingFace weight and its bert_jax path and
layout; both directions are read from it. Google's TF names are first renamed to HuggingFace names
(and TF's (in, out) kernels transposed to torch's (out, in)), so the table is the only mapping.

Parameter trees use the head-model layout: `{"bert": {...}, "mlm": {...}, "nsp_head": {...}}`;
`BertModel` alone takes the `bert` subtree.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Iterable, Mapping

import numpy as np

from bert_jax.models.config import BertConfig

# --- layout transforms between torch (out, in) weights and bert_jax kernels ------------------
# Each is (to_jax(array, config), to_hf(array, config)).
_Transform = tuple[
  Callable[[np.ndarray, BertConfig], np.ndarray], Callable[[np.ndarray, BertConfig], np.ndarray]
]

_COPY: _Transform = (lambda a, c: a, lambda a, c: a)
_LINEAR: _Transform = (lambda a, c: a.T, lambda a, c: a.T)
# query/key/value: torch (heads*head_dim, embed) -> (embed, heads, head_dim)
_QKV_KERNEL: _Transform = (
  lambda a, c: a.T.reshape(c.hidden_size, c.num_heads, c.head_dim),
  lambda a, c: a.reshape(c.hidden_size, c.num_heads * c.head_dim).T,
)
_QKV_BIAS: _Transform = (
  lambda a, c: a.reshape(c.num_heads, c.head_dim),
  lambda a, c: a.reshape(c.num_heads * c.head_dim),
)
# attention output: torch (embed, heads*head_dim) -> (heads, head_dim, embed)
_OUT_KERNEL: _Transform = (
  lambda a, c: a.T.reshape(c.num_heads, c.head_dim, c.hidden_size),
  lambda a, c: a.reshape(c.num_heads * c.head_dim, c.hidden_size).T,
)

# HuggingFace name (without the "bert." prefix for encoder weights) -> (bert_jax path, transform)
_GLOBAL_RULES: dict[str, tuple[str, _Transform]] = {
  "embeddings.word_embeddings.weight": ("bert/embeddings/word_embeddings/embedding", _COPY),
  "embeddings.position_embeddings.weight": ("bert/embeddings/position_embeddings/embedding", _COPY),
  "embeddings.token_type_embeddings.weight": ("bert/embeddings/token_type_embeddings/embedding", _COPY),
  "embeddings.LayerNorm.weight": ("bert/embeddings/layer_norm/scale", _COPY),
  "embeddings.LayerNorm.bias": ("bert/embeddings/layer_norm/bias", _COPY),
  "pooler.dense.weight": ("bert/pooler/kernel", _LINEAR),
  "pooler.dense.bias": ("bert/pooler/bias", _COPY),
  "cls.predictions.transform.dense.weight": ("mlm/transform/kernel", _LINEAR),
  "cls.predictions.transform.dense.bias": ("mlm/transform/bias", _COPY),
  "cls.predictions.transform.LayerNorm.weight": ("mlm/transform_norm/scale", _COPY),
  "cls.predictions.transform.LayerNorm.bias": ("mlm/transform_norm/bias", _COPY),
  "cls.predictions.bias": ("mlm/output_bias", _COPY),
  "cls.seq_relationship.weight": ("nsp_head/classifier/kernel", _LINEAR),
  "cls.seq_relationship.bias": ("nsp_head/classifier/bias", _COPY),
  # Fine-tuning heads: BertForSequenceClassification / TokenClassification / MultipleChoice, QuestionAnswering.
  "classifier.weight": ("classifier/kernel", _LINEAR),
  "classifier.bias": ("classifier/bias", _COPY),
  "qa_outputs.weight": ("qa_outputs/kernel", _LINEAR),
  "qa_outputs.bias": ("qa_outputs/bias", _COPY),
}
_LAYER_RULES: dict[str, tuple[str, _Transform]] = {
  "attention.self.query.weight": ("attention/query/kernel", _QKV_KERNEL),
  "attention.self.query.bias": ("attention/query/bias", _QKV_BIAS),
  "attention.self.key.weight": ("attention/key/kernel", _QKV_KERNEL),
  "attention.self.key.bias": ("attention/key/bias", _QKV_BIAS),
  "attention.self.value.weight": ("attention/value/kernel", _QKV_KERNEL),
  "attention.self.value.bias": ("attention/value/bias", _QKV_BIAS),
  "attention.output.dense.weight": ("attention/out/kernel", _OUT_KERNEL),
  "attention.output.dense.bias": ("attention/out/bias", _COPY),
  "attention.output.LayerNorm.weight": ("attention_norm/scale", _COPY),
  "attention.output.LayerNorm.bias": ("attention_norm/bias", _COPY),
  "intermediate.dense.weight": ("mlp/intermediate/kernel", _LINEAR),
  "intermediate.dense.bias": ("mlp/intermediate/bias", _COPY),
  "output.dense.weight": ("mlp/output/kernel", _LINEAR),
  "output.dense.bias": ("mlp/output/bias", _COPY),
  "output.LayerNorm.weight": ("mlp_norm/scale", _COPY),
  "output.LayerNorm.bias": ("mlp_norm/bias", _COPY),
}
# The masked-LM head (the word-embedding decoder aside, which is the encoder's): bert_jax path ->
# (HuggingFace name, Google TF name), for errors in the checkpoint's own terms.
MLM_HEAD: dict[str, tuple[str, str]] = {
  "mlm/transform/kernel": (
    "cls.predictions.transform.dense.weight",
    "cls/predictions/transform/dense/kernel",
  ),
  "mlm/transform/bias": ("cls.predictions.transform.dense.bias", "cls/predictions/transform/dense/bias"),
  "mlm/transform_norm/scale": (
    "cls.predictions.transform.LayerNorm.weight",
    "cls/predictions/transform/LayerNorm/gamma",
  ),
  "mlm/transform_norm/bias": (
    "cls.predictions.transform.LayerNorm.bias",
    "cls/predictions/transform/LayerNorm/beta",
  ),
  "mlm/output_bias": ("cls.predictions.bias", "cls/predictions/output_bias"),
}
_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
# Buffers and weights tied to others: known, carry nothing of their own.
_TIED_OR_BUFFERS = {
  "embeddings.position_ids",
  "cls.predictions.decoder.weight",
  "cls.predictions.decoder.bias",
}
HEAD_PREFIXES = ("mlm", "nsp_head", "classifier", "qa_outputs")
_TOP_LEVEL_HF = (
  "cls.",
  "classifier.",
  "qa_outputs.",
)  # head weights HuggingFace does not prefix with "bert."


class ConversionError(ValueError):
  pass


def _canonical_hf_name(name: str) -> str:
  """Strips the `bert.` prefix of head models and renames old `gamma`/`beta` LayerNorm weights."""
  if name.startswith("bert."):
    name = name[len("bert.") :]
  name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
  return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)


def _rule_for(name: str) -> tuple[str, _Transform] | None:
  if name in _GLOBAL_RULES:
    return _GLOBAL_RULES[name]
  m = _LAYER_KEY.match(name)
  if m and m.group(2) in _LAYER_RULES:
    path, transform = _LAYER_RULES[m.group(2)]
    return f"bert/encoder/layer_{m.group(1)}/{path}", transform
  return None


def hf_to_params(
  state: Mapping[str, np.ndarray], config: BertConfig, *, source: str = "checkpoint", strict: bool = True
) -> dict:
  """A HuggingFace BERT state dict (BertModel, BertForPreTraining or BertForMaskedLM keys) ->
  a nested bert_jax tree {"bert": ..., "mlm": ..., "nsp_head": ...} (heads only where present).

  Unknown keys raise (strict) so that a fine-tuned model's task head or another architecture's
  weights are never silently dropped; `strict=False` skips them.
  """
  flat: dict[str, np.ndarray] = {}
  unknown = []
  for raw_name, value in state.items():
    name = _canonical_hf_name(raw_name)
    if name in _TIED_OR_BUFFERS:
      continue
    rule = _rule_for(name)
    if rule is None:
      unknown.append(raw_name)
      continue
    path, (to_jax, _) = rule
    value = np.asarray(value)
    try:
      flat[path] = np.ascontiguousarray(to_jax(value, config))
    except ValueError:
      raise ConversionError(
        f"{source}: weight {raw_name!r} has shape {value.shape}, which does not fit the config "
        f"(hidden_size={config.hidden_size}, num_heads={config.num_heads})"
      ) from None
  if unknown and strict:
    raise ConversionError(
      f"{source}: unknown weight name(s) {sorted(unknown)[:8]}{' ...' if len(unknown) > 8 else ''}; bert_jax "
      "converts BertModel, BertForPreTraining, BertForMaskedLM and the BertFor<Task> heads "
      "(strict=False skips others)"
    )
  _check_tied(state, flat, source)
  return unflatten(flat)


def _check_tied(state, flat, source):
  # BERT ties the MLM decoder to the word embeddings; a checkpoint whose decoder differs is not
  # a BERT we can represent, and dropping its decoder would change the model's outputs.
  for raw_name, value in state.items():
    if _canonical_hf_name(raw_name) == "cls.predictions.decoder.weight":
      embedding = flat.get("bert/embeddings/word_embeddings/embedding")
      if embedding is not None and not np.array_equal(np.asarray(value), embedding):
        raise ConversionError(
          f"{source}: {raw_name} is not tied to the word embeddings; bert_jax's MLM "
          "decoder shares the word embedding matrix"
        )


def params_to_hf(params: Mapping, config: BertConfig) -> dict[str, np.ndarray]:
  """bert_jax tree -> HuggingFace state dict. With MLM/NSP heads the names are BertForPreTraining's
  (`bert.`-prefixed, `cls.*`); without, BertModel's. Tied decoder weights are left to transformers."""
  flat = flatten(params)
  with_heads = any(path.split("/")[0] in HEAD_PREFIXES for path in flat)
  inverse: dict[str, tuple[str, _Transform]] = {path: (name, t) for name, (path, t) in _GLOBAL_RULES.items()}
  for i in range(config.num_layers):
    for name, (path, t) in _LAYER_RULES.items():
      inverse[f"bert/encoder/layer_{i}/{path}"] = (f"encoder.layer.{i}.{name}", t)
  state = {}
  for path, value in flat.items():
    if path not in inverse:
      raise ConversionError(f"bert_jax parameter {path!r} has no HuggingFace BERT equivalent")
    name, (_, to_hf) = inverse[path]
    if with_heads and not name.startswith(_TOP_LEVEL_HF):
      name = "bert." + name
    state[name] = np.ascontiguousarray(
      to_hf(np.asarray(value, np.float32) if value.dtype != np.float32 else np.asarray(value), config)
    )
  return state


# --- Google's original TensorFlow names ------------------------------------------------------

# Optimizer slots (BERT's AdamWeightDecay and MLPerf's LAMB keep `<weight>/adam_m`, `/adam_v`), step counters and
# mixed-precision loss-scale state: not weights.
_TF_SLOTS = re.compile(
  r"(/adam_[mv]|/Adam(_\d+)?|/Momentum|/LAMB.*|/AdamWeightDecayOptimizer(_\d+)?)$|^global_step$|^(bad_steps|loss_scale)"
)


def tf_to_hf_state(
  variables: Mapping[str, np.ndarray], *, source: str = "TF checkpoint"
) -> dict[str, np.ndarray]:
  """Renames Google's `bert/encoder/layer_0/attention/self/query/kernel`-style variables to
  HuggingFace names and transposes dense kernels from TF's (in, out) to torch's (out, in).
  Optimizer slots and the step counter are dropped."""
  state = {}
  for name, value in variables.items():
    if _TF_SLOTS.search(name):
      continue
    if name == "cls/seq_relationship/output_weights":
      state["cls.seq_relationship.weight"] = value  # already (out, in)
      continue
    if name == "cls/seq_relationship/output_bias":
      state["cls.seq_relationship.bias"] = value
      continue
    if name == "cls/predictions/output_bias":
      state["cls.predictions.bias"] = value
      continue
    parts = name.split("/")
    if parts[0] == "bert":
      parts = parts[1:]
    hf = ".".join(parts)
    hf = re.sub(r"^encoder\.layer_(\d+)\.", r"encoder.layer.\1.", hf)
    hf = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", hf)
    hf = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", hf)
    if hf.endswith(".kernel"):
      hf = hf[: -len(".kernel")] + ".weight"
      value = np.asarray(value).T
    elif re.match(r"^embeddings\.(word|position|token_type)_embeddings$", hf):
      hf += ".weight"
    if _rule_for(_canonical_hf_name(hf)) is None:
      raise ConversionError(
        f"{source}: unknown variable {name!r}; expected Google BERT variable names "
        "(bert/embeddings/..., bert/encoder/layer_N/..., bert/pooler/..., cls/...)"
      )
    state[hf] = value
  return state


# --- file readers ------------------------------------------------------------------------------


def read_hf_weights(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """Reads `model.safetensors` (preferred) or `pytorch_model.bin` from a folder."""
  directory = os.fspath(directory)
  safetensors_path = os.path.join(directory, "model.safetensors")
  bin_path = os.path.join(directory, "pytorch_model.bin")
  if os.path.exists(safetensors_path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
      return load_file(safetensors_path), safetensors_path
    except (SafetensorError, OSError, ValueError) as e:
      raise ConversionError(f"{safetensors_path}: not a readable safetensors file ({e})") from None
  if os.path.exists(bin_path):
    return _read_torch_bin(bin_path), bin_path
  if any(name.startswith("model-") and name.endswith(".safetensors") for name in os.listdir(directory)):
    raise ConversionError(
      f"{directory}: sharded safetensors checkpoints are not supported yet; "
      "expected a single model.safetensors"
    )
  raise FileNotFoundError(
    f"{directory}: no model.safetensors or pytorch_model.bin (expected a HuggingFace BERT checkpoint folder)"
  )


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
  # A .bin file is a pickle: only torch's restricted unpickler (weights_only=True) may read it, so a
  # downloaded file can never run code; and only when torch is installed.
  try:
    import torch
  except ImportError:
    raise ConversionError(
      f"{path}: reading pytorch_model.bin needs PyTorch (pip install torch); "
      "or convert it to model.safetensors"
    ) from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for a bad or unsafe pickle
    raise ConversionError(f"{path}: could not load as a weights-only torch checkpoint ({e})") from None
  if not isinstance(state, Mapping):
    raise ConversionError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
  return {
    k: v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
    for k, v in state.items()
    if hasattr(v, "detach")
  }


# --- nested <-> flat trees ------------------------------------------------------------------


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def check_against(
  params: Mapping, expected: Mapping, *, source: str, allow_unused: Iterable[str] = ()
) -> None:
  """Raises, naming the source, when `params` lacks a parameter of `expected` (a shape tree from
  jax.eval_shape), has one of the wrong shape, or has extras not listed in `allow_unused`."""
  got, want = flatten(params), flatten(expected)
  missing = sorted(set(want) - set(got))
  extra = sorted(p for p in set(got) - set(want) if not any(p.startswith(a) for a in allow_unused))
  wrong = [
    f"{p}: checkpoint {tuple(np.shape(got[p]))} vs config {tuple(want[p].shape)}"
    for p in sorted(set(got) & set(want))
    if tuple(np.shape(got[p])) != tuple(want[p].shape)
  ]
  problems = []
  if wrong:
    problems.append("shapes do not match the config: " + "; ".join(wrong[:6]))
  if missing:
    problems.append(f"missing parameters {missing[:6]}{' ...' if len(missing) > 6 else ''}")
  if extra:
    problems.append(f"parameters the model does not use {extra[:6]}{' ...' if len(extra) > 6 else ''}")
  if problems:
    raise ConversionError(f"{source}: " + "; ".join(problems))
