"""The model's hyperparameters as one frozen dataclass.

Modules take a `BertConfig`; configs/ (ml_collections) and checkpoint folders (HuggingFace
config.json, Google's bert_config.json) are both translated into it, so the model never reads
a loosely typed dict.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

# HuggingFace spells activations by name; the model only knows these two GELUs. "gelu_new",
# "gelu_pytorch_tanh" and "gelu_fast" are all the tanh approximation.
_ACTIVATIONS = {
  "gelu": "gelu",
  "gelu_exact": "gelu",
  "gelu_tanh": "gelu_tanh",
  "gelu_new": "gelu_tanh",
  "gelu_pytorch_tanh": "gelu_tanh",
  "gelu_fast": "gelu_tanh",
}
POOLINGS = ("cls", "mean", "max")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")
# learned: BERT's table; sinusoidal: fixed sinusoids; rope / alibi / t5: relative, inside attention
# (positions.py); none: no position information at all.
POSITION_ENCODINGS = ("learned", "sinusoidal", "rope", "alibi", "t5", "none")
NORM_POSITIONS = ("post", "pre")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = "gelu"
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  pad_token_id: int = 0
  # "cls" is BERT's pooler: the [CLS] vector through dense + tanh. "mean" and "max" pool the
  # last hidden states over non-padding tokens (sentence-embedding models such as MiniLM).
  pooling: str = "cls"
  # Attention: the variant (dense | local | local_global | linear) and the kernel that computes it
  # (xla | chunked | dot_product | pallas | splash); see models/attention.py.
  attention: str = "dense"
  attention_kernel: str = "xla"
  attention_window: int = 64  # local attention: keys within this many positions on each side
  global_every: int = 3  # local_global: layers 0, n, 2n, ... attend globally (ModernBERT: 3)
  attention_block_size: int = 256  # the chunked kernel's query/key block length
  num_kv_heads: int = 0  # key/value heads; 0: one per query head (MHA); 1: multi-query; else grouped
  position_encoding: str = "learned"
  rope_theta: float = 10_000.0
  # local_global with rope: the global layers' base (ModernBERT: 160,000 global, 10,000 local); 0: rope_theta
  rope_theta_global: float = 0.0
  t5_num_buckets: int = 32
  t5_max_distance: int = 128
  norm_position: str = "post"  # post: LN(x + f(x)) as BERT; pre: x + f(LN(x)) and a final LayerNorm
  gated_mlp: bool = False  # True: GLU feed-forward, act(x W_gate) * (x W_in) (GeGLU with GELU)
  # True: word embeddings times sqrt(hidden_size) before positions are added (Vaswani et al.; what sinusoids,
  # entries of +-1, need against BERT's 0.02-scale initialisation). The MLM decoder keeps the unscaled table.
  scale_embeddings: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat: str = "none"

  def __post_init__(self):
    problems = []
    for name in (
      "vocab_size",
      "hidden_size",
      "num_layers",
      "num_heads",
      "mlp_dim",
      "max_position_embeddings",
      "type_vocab_size",
      "attention_window",
      "global_every",
      "attention_block_size",
      "t5_num_buckets",
      "t5_max_distance",
    ):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{name}={value!r} (expected a positive integer)")
    if not problems and self.hidden_size % self.num_heads:
      problems.append(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
    if not isinstance(self.num_kv_heads, int) or self.num_kv_heads < 0:
      problems.append(f"num_kv_heads={self.num_kv_heads!r} (expected 0 or a positive integer)")
    elif self.num_kv_heads and self.num_heads % self.num_kv_heads:
      problems.append(f"num_kv_heads={self.num_kv_heads} does not divide num_heads={self.num_heads}")
    if self.position_encoding == "rope" and not problems and self.head_dim % 2:
      problems.append(f"position_encoding='rope' needs an even head_dim, got {self.head_dim}")
    if self.position_encoding == "t5" and self.t5_num_buckets < 4:
      problems.append(f"t5_num_buckets={self.t5_num_buckets} (expected at least 4)")
    if self.hidden_act not in _ACTIVATIONS:
      problems.append(f"hidden_act={self.hidden_act!r} (expected one of {sorted(_ACTIVATIONS)})")
    for name, allowed in (
      ("pooling", POOLINGS),
      ("remat", REMAT_POLICIES),
      ("dtype", DTYPES),
      ("param_dtype", DTYPES),
      ("position_encoding", POSITION_ENCODINGS),
      ("norm_position", NORM_POSITIONS),
    ):
      if getattr(self, name) not in allowed:
        problems.append(f"{name}={getattr(self, name)!r} (expected one of {list(allowed)})")
    if not isinstance(self.rope_theta, (int, float)) or self.rope_theta <= 1:
      problems.append(f"rope_theta={self.rope_theta!r} (expected a number above 1)")
    if not isinstance(self.rope_theta_global, (int, float)) or not (
      self.rope_theta_global == 0 or self.rope_theta_global > 1
    ):
      problems.append(f"rope_theta_global={self.rope_theta_global!r} (expected 0, off, or a number above 1)")
    elif self.rope_theta_global and (self.attention, self.position_encoding) != ("local_global", "rope"):
      problems.append(
        f"rope_theta_global={self.rope_theta_global} is the base of the global layers of attention="
        f"'local_global' with position_encoding='rope'; this config has attention={self.attention!r}, "
        f"position_encoding={self.position_encoding!r} (set it to 0)"
      )
    if not isinstance(self.scale_embeddings, bool):
      problems.append(f"scale_embeddings={self.scale_embeddings!r} (expected True or False)")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        problems.append(f"{name}={getattr(self, name)!r} (expected a value in [0, 1))")
    if problems:
      raise ValueError("Invalid BERT config: " + "; ".join(problems))

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def is_bert(self) -> bool:
    """True when the architecture is BERT's own, so HuggingFace's BertModel can hold the weights."""
    same = all(getattr(self, k) == v for k, v in _BERT_ARCHITECTURE.items())
    return same and self.kv_heads == self.num_heads

  @property
  def activation(self) -> str:
    """The canonical activation: "gelu" (exact, erf) or "gelu_tanh"."""
    return _ACTIVATIONS[self.hidden_act]

  def replace(self, **changes) -> "BertConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> "BertConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"{source}: unknown BERT config keys {unknown}; known keys are {sorted(known)}")
    return cls(**values)

  # --- HuggingFace config.json -------------------------------------------------------------
  _HF_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "mlp_dim",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
  }
  _HF_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
  )

  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides) -> "BertConfig":
    """Reads HuggingFace's BertConfig fields (also Google's bert_config.json, which uses the same names)."""
    missing = [k for k in cls._HF_REQUIRED if k not in hf]
    if missing:
      raise ValueError(
        f"{source}: missing BERT config fields {missing}; a BERT config.json has {list(cls._HF_REQUIRED)}"
      )
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
      raise ValueError(
        f"{source}: model_type={model_type!r}; bert_jax loads BERT checkpoints (model_type 'bert')"
      )
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
      raise ValueError(
        f"{source}: position_embedding_type={position_type!r} is not supported; "
        "expected 'absolute' (BERT's learned positions)"
      )
    values = {ours: hf[theirs] for theirs, ours in cls._HF_NAMES.items() if theirs in hf}
    if values.get("pad_token_id") is None:
      values.pop("pad_token_id", None)
    values.update(overrides)
    try:
      return cls(**values)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{source}: {e}") from None

  def to_hf_dict(self) -> dict[str, Any]:
    if not self.is_bert:
      changed = {k: getattr(self, k) for k, v in _BERT_ARCHITECTURE.items() if getattr(self, k) != v}
      if self.kv_heads != self.num_heads:
        changed["num_kv_heads"] = self.num_kv_heads
      raise ValueError(
        f"this model is not a BERT architecture ({changed}): HuggingFace's BertModel cannot hold it; "
        "save it in bert_jax's own format instead"
      )
    hf = {theirs: getattr(self, ours) for theirs, ours in self._HF_NAMES.items()}
    if self.hidden_act in ("gelu_tanh",):
      hf["hidden_act"] = "gelu_new"
    hf.update(model_type="bert", position_embedding_type="absolute", architectures=["BertModel"])
    return hf


# BERT's values of the fields that change what is computed (kernels and block sizes do not).
_BERT_ARCHITECTURE = dict(
  attention="dense",
  position_encoding="learned",
  norm_position="post",
  gated_mlp=False,
  scale_embeddings=False,
)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
  """json.load with an error that names the file and says what was expected."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: file not found (expected a JSON config file)") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e}); expected a JSON object of config fields") from None
  if not isinstance(value, dict):
    raise ValueError(f"{path}: expected a JSON object of config fields, got {type(value).__name__}")
  return value
