"""`bert_jax.from_pretrained(path)`: a pretrained BERT from a HuggingFace folder, a Google TF
checkpoint folder or a bert_jax export, with its tokenizer, ready to `encode(texts)`.

Formats, detected from the folder's files:
- HuggingFace: config.json + model.safetensors (preferred) or pytorch_model.bin (+ vocab.txt or tokenizer.json)
- Google: bert_config.json + bert_model.ckpt.index/.data-* (or model.ckpt-STEP.*, as training writes them)
  + vocab.txt, read without TensorFlow
- bert_jax: bert_jax_config.json + params.safetensors (bert_jax's own parameter tree) + tokenizer files

`load_weights` reads the config and weights alone (no tokenizer), also from a Google checkpoint prefix with
its config file elsewhere (MLPerf's layout): what jobs that take token ids, not text, need.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import batching, convert, files, hub
from bert_jax.models import BertConfig, BertForPreTraining, BertModel, scan_params, unscan_params
from bert_jax.models.config import read_json
from bert_jax.tokenization import Tokenizer

BERT_JAX_CONFIG = "bert_jax_config.json"
BERT_JAX_PARAMS = "params.safetensors"
FORMAT_VERSION = 1


def text_lists(
  texts: str | Sequence[str],
  pairs: str | Sequence[str] | None,
  caller: str,
  error: type[ValueError] = ValueError,
) -> tuple[bool, list[str], list[str] | None]:
  """(whether one text came in, the texts as a list, their second segments as a list or None): the calls
  that take one text or many (`encode`, `Predictor.predict`); `error` names `caller` when the counts differ."""
  single = isinstance(texts, str)
  texts = [texts] if single else list(texts)
  if pairs is not None:
    pairs = [pairs] if isinstance(pairs, str) else list(pairs)
    if len(pairs) != len(texts):
      raise error(f"{caller}: {len(texts)} texts but {len(pairs)} pairs")
  return single, texts, pairs


@dataclasses.dataclass
class PretrainedBert:
  """A BERT with its weights and tokenizer. `params` is the head-model tree
  {"bert": ..., "mlm": ..., "nsp_head": ...}; heads are present when the checkpoint had them."""

  config: BertConfig
  params: dict
  tokenizer: Tokenizer
  source: str = ""

  @property
  def has_pretraining_heads(self) -> bool:
    return "mlm" in self.params

  def model(self) -> BertModel | BertForPreTraining:
    """The linen module matching `params`: BertForPreTraining when the heads are loaded."""
    if self.has_pretraining_heads:
      return BertForPreTraining(self.config, nsp="nsp_head" in self.params)
    return BertModel(self.config)

  def variables(self) -> dict:
    return {"params": self.params if self.has_pretraining_heads else self.params["bert"]}

  @functools.cached_property
  def _encode_fn(self):
    model = BertModel(self.config)

    @jax.jit
    def run(params, input_ids, attention_mask, token_type_ids):
      out = model.apply({"params": params}, input_ids, attention_mask, token_type_ids)
      return out["last_hidden_state"], out["pooler_output"]

    return run

  def encode(
    self,
    texts: str | Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    max_length: int | None = None,
    batch_size: int = 32,
  ) -> dict[str, np.ndarray]:
    """Texts (and optional second segments) -> numpy `last_hidden_state` (N, L, H),
    `pooler_output` (N, H) and `attention_mask` (N, L), L the longest encoded text.

    Texts run longest first in batches of batch_size rows, each padded to its own power-of-two length
    bucket (`batching.run_by_length`), so short texts do not pay for a long one and a stream of calls
    compiles a handful of shapes. `last_hidden_state` past a text's own tokens is 0 where its batch was
    shorter than the longest (use `attention_mask`).
    """
    _, texts, pairs = text_lists(texts, pairs, "encode")
    if not texts:
      raise ValueError("encode: no texts given")
    max_length = min(max_length or self.config.max_position_embeddings, self.config.max_position_embeddings)
    enc = self.tokenizer(
      texts, pairs, max_length=max_length, truncation=True, padding="longest", pad_to_multiple_of=32
    )
    length = int(enc["attention_mask"].sum(axis=1).max())
    features = {k: np.asarray(enc[k][:, :max_length]) for k in batching.KEYS}

    def forward(input_ids, attention_mask, token_type_ids):
      h, p = self._encode_fn(self.params["bert"], input_ids, attention_mask, token_type_ids)
      return {"last_hidden_state": h, "pooler_output": p}

    out = batching.run_by_length(features, batch_size, forward, ("last_hidden_state",))
    return {
      "last_hidden_state": out["last_hidden_state"][:, :length],
      "pooler_output": out["pooler_output"],
      "attention_mask": np.asarray(enc["attention_mask"][:, :length]),
    }

  def save_pretrained(self, directory: str | os.PathLike) -> None:
    """Writes a HuggingFace folder (config.json, model.safetensors, vocab.txt, tokenizer config)
    that transformers' BertModel / BertForPreTraining load as it is."""
    params = jax.device_get(self._unscanned_params())
    state = convert.params_to_hf(params, self.config)
    hf_config = self.config.to_hf_dict()
    hf_config["architectures"] = ["BertForPreTraining" if self.has_pretraining_heads else "BertModel"]
    hf_config["tie_word_embeddings"] = True
    write_hf_folder(os.fspath(directory), state, hf_config, self.tokenizer)

  def save(self, directory: str | os.PathLike) -> None:
    """Writes bert_jax's own export: the parameter tree as safetensors plus the full BertConfig
    (pooling, dtype and the rest, which a HuggingFace config.json cannot hold)."""
    write_bert_jax_folder(
      os.fspath(directory), self.config.replace(scan_layers=False), self._unscanned_params(), self.tokenizer
    )

  def _unscanned_params(self):
    if self.config.scan_layers:
      return unscan_params(self.params, self.config.num_layers)
    return self.params


def write_hf_folder(directory: str, state: dict, hf_config: dict, tokenizer) -> None:
  """A HuggingFace folder: the state dict as model.safetensors (written atomically), config.json and the
  tokenizer files."""
  from safetensors.numpy import save_file

  os.makedirs(directory, exist_ok=True)
  with files.atomic_path(os.path.join(directory, "model.safetensors")) as tmp:
    save_file(state, tmp, metadata={"format": "pt"})
  files.write_json(os.path.join(directory, "config.json"), hf_config)
  tokenizer.save(directory)


def write_bert_jax_folder(directory: str, config: BertConfig, params, tokenizer, **extra: Any) -> None:
  """A bert_jax folder: params.safetensors (the unscanned tree), bert_jax_config.json (the BertConfig plus
  `extra` entries, e.g. a fine-tuned model's "task"), tokenizer files. Each file is written atomically."""
  from safetensors.numpy import save_file

  os.makedirs(directory, exist_ok=True)
  flat = {k: np.asarray(v) for k, v in convert.flatten(jax.device_get(params)).items()}
  with files.atomic_path(os.path.join(directory, BERT_JAX_PARAMS)) as tmp:
    save_file(flat, tmp)
  tokenizer.save(directory)
  files.write_json(
    os.path.join(directory, BERT_JAX_CONFIG),
    {"format": "bert_jax", "version": FORMAT_VERSION, "model": config.to_dict(), **extra},
  )


# A TF checkpoint's index: Google's releases name it bert_model.ckpt.index, a TF1 training run model.ckpt-STEP.index.
_TF_INDEX = re.compile(r"\.ckpt(-\d+)?\.index$")


def detect_format(path: str) -> str:
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: not a directory (expected a checkpoint folder)")
  names = set(os.listdir(path))
  if BERT_JAX_CONFIG in names:
    return "bert_jax"
  if "bert_config.json" in names or any(_TF_INDEX.search(n) for n in names):
    return "google"
  if "config.json" in names:
    return "huggingface"
  raise FileNotFoundError(
    f"{path}: not a BERT checkpoint folder; expected config.json + model.safetensors (HuggingFace), "
    f"bert_config.json + bert_model.ckpt.* (Google) or {BERT_JAX_CONFIG} (bert_jax); found {sorted(names)[:10]}"
  )


def read_config(path: str | os.PathLike, **overrides: Any) -> BertConfig:
  """A checkpoint folder's BertConfig from its config file alone (no weights read): HuggingFace config.json,
  Google bert_config.json or bert_jax_config.json. Keyword arguments override fields, as in from_pretrained."""
  path = hub.local_folder(path)
  kind = detect_format(path)
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if kind == "bert_jax":
    config_path = os.path.join(path, BERT_JAX_CONFIG)
    return BertConfig.from_dict(dict(read_json(config_path)["model"], **overrides), source=config_path)
  config_path = os.path.join(path, "config.json" if kind == "huggingface" else "bert_config.json")
  return BertConfig.from_hf_dict(read_json(config_path), source=config_path, **overrides)


def from_pretrained(
  path: str | os.PathLike,
  *,
  pooling: str | None = None,
  dtype: str | None = None,
  param_dtype: str | None = None,
  scan_layers: bool = False,
  heads: bool | None = None,
  lowercase: bool | None = None,
  strict: bool = True,
  **config_overrides: Any,
) -> PretrainedBert:
  """Loads a BERT checkpoint folder (format detected from its files), or `hf://ORG/NAME[@REVISION]` from the
  HuggingFace Hub (bert_jax/hub.py: downloaded once into the Hub's cache).

  pooling: "cls" (BERT's pooler), "mean" or "max"; default: the bert_jax export's setting, else "cls".
  heads: load the MLM/NSP heads (True), drop them (False), or keep them when present (None).
  lowercase: the tokenizer's casing when the folder does not say (Google folders); default inferred
    from the vocabulary (an uncased vocab holds no capital letters).
  Other keyword arguments override BertConfig fields (dropout_rate, remat, attention, ...).
  """
  path = hub.local_folder(path)
  kind = detect_format(path)
  config, params, _ = load_weights(
    path,
    heads=heads,
    strict=strict,
    pooling=pooling,
    dtype=dtype,
    param_dtype=param_dtype,
    **config_overrides,
  )
  tokenizer = Tokenizer.from_pretrained(path) if kind == "bert_jax" else _tokenizer(path, lowercase)
  if scan_layers:
    params = scan_params(params, config.num_layers)
    config = config.replace(scan_layers=True)
  if tokenizer.vocab_size != config.vocab_size:
    raise convert.ConversionError(
      f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {config.vocab_size}"
    )
  return PretrainedBert(config=config, params=params, tokenizer=tokenizer, source=path)


def load_weights(
  path: str | os.PathLike,
  *,
  heads: bool | None = None,
  config_file: str | os.PathLike = "",
  strict: bool = True,
  **overrides: Any,
) -> tuple[BertConfig, dict, str]:
  """(config, parameter tree, weights file) of a checkpoint, without its tokenizer: a folder of any of the
  three formats, `hf://ORG/NAME`, or a Google TF checkpoint prefix (`.../model.ckpt-28252`).

  config_file: the bert_config.json / config.json when it is not beside the weights (MLPerf keeps it apart
    from its tf1_ckpt folder); empty: the checkpoint folder's own.
  heads: as in from_pretrained; True also fails, naming the checkpoint's missing variables, unless the
    masked-LM head is complete.
  Other keyword arguments (None: unchanged) override BertConfig fields.
  """
  path = hub.local_folder(path)
  overrides = {k: v for k, v in overrides.items() if v is not None}
  config, params, source, kind = _read_weights(path, overrides, strict, os.fspath(config_file))
  if heads:
    _require_mlm_head(params, kind, source)
  params = _keep_encoder_and_heads(params, config, heads, path)
  if config.pooling == "cls" and "pooler" not in params["bert"]:
    params["bert"]["pooler"] = _fresh_pooler(config, path)
  _check_shapes(params, config, source)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.dtype(config.param_dtype)), params)
  return config, params, source


def _read_weights(
  path: str, overrides: dict, strict: bool, config_file: str
) -> tuple[BertConfig, dict, str, str]:
  """The checkpoint's config, parameter tree (with whatever heads it holds), weights file and format."""
  from bert_jax.tf_checkpoint import find_checkpoint_prefix

  if os.path.isdir(path):
    kind = detect_format(path)
  elif os.path.isfile(find_checkpoint_prefix(path) + ".index"):
    kind = "google"  # a checkpoint prefix, or its .index or data file
  else:
    raise FileNotFoundError(
      f"{path}: no such checkpoint folder or TF checkpoint prefix (expected a folder, or a prefix such as "
      ".../model.ckpt-28252 with its .index beside it)"
    )
  if kind == "bert_jax":
    if config_file:
      raise ValueError(
        f"{path}: a bert_jax export carries its own {BERT_JAX_CONFIG}; give no separate config file"
      )
    config, params = _load_bert_jax(path, overrides)
    return config, params, os.path.join(path, BERT_JAX_PARAMS), kind
  if kind == "huggingface":
    config_path = config_file or os.path.join(path, "config.json")
    config = BertConfig.from_hf_dict(read_json(config_path), source=config_path, **overrides)
    state, source = convert.read_hf_weights(path)
    return config, convert.hf_to_params(state, config, source=source, strict=strict), source, kind
  config, params, source = _load_google(path, overrides, strict, config_file)
  return config, params, source, kind


def _require_mlm_head(params: dict, kind: str, source: str) -> None:
  """Fails, naming what is missing in the checkpoint's own terms, unless the masked-LM head is complete."""
  flat = convert.flatten(params)
  missing = [path for path in convert.MLM_HEAD if path not in flat]
  if not missing:
    return
  column = {"google": 1, "huggingface": 0}.get(kind)
  names = [path if column is None else convert.MLM_HEAD[path][column] for path in missing]
  raise convert.ConversionError(
    f"{source}: the checkpoint has no complete masked-LM head: missing {names}. Masked-token predictions need "
    "the pretraining head (a Google checkpoint's cls/predictions/*, HuggingFace BertForPreTraining or "
    "BertForMaskedLM); an encoder-only checkpoint (BertModel) cannot be scored"
  )


def _keep_encoder_and_heads(params: dict, config: BertConfig, heads: bool | None, path: str) -> dict:
  """The encoder, plus the MLM/NSP heads unless `heads=False`; task heads and (for mean/max pooling) the
  pooler are dropped."""
  keep = {"bert"}
  if heads is not False:
    keep.add("mlm")
    if config.pooling == "cls":  # NSP reads BERT's pooler; mean/max pooling has none
      keep.add("nsp_head")
  dropped = sorted(set(params) & {"classifier", "qa_outputs"})
  if dropped:
    # The root logger, as ever: it prints even where the caller set no logging up.
    logging.warning(  # noqa: LOG015
      "%s: fine-tuned task head %s not loaded: from_pretrained gives the encoder "
      "(bert_jax.predict.Predictor loads the whole task model)",
      path,
      dropped,
    )
  params = {k: v for k, v in params.items() if k in keep}
  if config.pooling != "cls":
    params["bert"] = {k: v for k, v in params["bert"].items() if k != "pooler"}
  return params


def _fresh_pooler(config: BertConfig, path: str) -> dict:
  # BertForMaskedLM checkpoints have no pooler. Like transformers, start it fresh (BERT's init)
  # and say so, rather than refuse a checkpoint whose encoder and MLM head are complete.
  logging.warning(  # noqa: LOG015
    "%s: the checkpoint has no pooler weights; initialising the pooler randomly "
    "(pooler_output is untrained; pass pooling='mean' for a trained sentence vector)",
    path,
  )
  init = nn.initializers.truncated_normal(stddev=config.initializer_range)
  return {
    "kernel": np.asarray(init(jax.random.key(0), (config.hidden_size,) * 2)),
    "bias": np.zeros((config.hidden_size,), np.float32),
  }


def _check_shapes(params: dict, config: BertConfig, source: str) -> None:
  """Fails unless `params` is exactly the tree the model for `config` (with the heads present) creates."""
  has_heads = "mlm" in params
  module = BertForPreTraining(config, nsp="nsp_head" in params) if has_heads else BertModel(config)
  expected = _shape_tree(module)
  if not has_heads:
    expected = {"bert": expected}
  convert.check_against(params, expected, source=source)


def _shape_tree(module) -> dict:
  """The parameter shapes `module` creates, without allocating them."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  return nn.meta.unbox(shapes["params"])


def _load_bert_jax(path: str, overrides: dict) -> tuple[BertConfig, dict]:
  from safetensors.numpy import load_file

  config_path = os.path.join(path, BERT_JAX_CONFIG)
  meta = read_json(config_path)
  if meta.get("format") != "bert_jax" or "model" not in meta:
    raise ValueError(f"{config_path}: expected {{'format': 'bert_jax', 'model': {{...}}}}")
  if meta.get("version", 0) > FORMAT_VERSION:
    raise ValueError(
      f"{config_path}: format version {meta['version']} is newer than this bert_jax "
      f"reads ({FORMAT_VERSION}); upgrade bert_jax"
    )
  values = dict(meta["model"], **overrides)
  config = BertConfig.from_dict(values, source=config_path)
  params_path = os.path.join(path, BERT_JAX_PARAMS)
  if not os.path.exists(params_path):
    raise FileNotFoundError(f"{params_path}: missing (a bert_jax export holds {BERT_JAX_PARAMS})")
  return config, convert.unflatten(load_file(params_path))


def _load_google(
  path: str, overrides: dict, strict: bool, config_file: str = ""
) -> tuple[BertConfig, dict, str]:
  from bert_jax.tf_checkpoint import find_checkpoint_prefix, read_tf_checkpoint

  # A folder holds one checkpoint (or a `checkpoint` file naming one); a prefix names it directly.
  prefix = find_checkpoint_prefix(path)
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(prefix))
  config_path = config_file or os.path.join(folder, "bert_config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(
      f"{config_path}: no such file; a Google TF checkpoint needs its bert_config.json (beside the checkpoint, "
      "or named separately: config_file= / --config.model_config=)"
    )
  config = BertConfig.from_hf_dict(read_json(config_path), source=config_path, **overrides)
  variables = read_tf_checkpoint(prefix)
  state = convert.tf_to_hf_state(variables, source=prefix)
  return config, convert.hf_to_params(state, config, source=prefix, strict=strict), prefix


def _tokenizer(path: str, lowercase: bool | None) -> Tokenizer:
  """The folder's tokenizer; `lowercase` overrides the casing where the folder cannot say (Google
  folders hold only vocab.txt: casing is then inferred from the vocabulary)."""
  if lowercase is None:
    return Tokenizer.from_pretrained(path)
  return Tokenizer.from_vocab(os.path.join(path, "vocab.txt"), lowercase=lowercase)
