"""Task heads on top of BertModel. Heads produce logits; losses live in objectives.py."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.bert import BertModel
from bert_jax.models.config import BertConfig
from bert_jax.models.layers import activation, constrain, dense, layer_norm, zeros_init

Array = jax.Array


class MlmHead(nn.Module):
  """transform (dense + GELU + LayerNorm), then logits against the tied word embeddings + a bias."""

  config: BertConfig

  @nn.compact
  def __call__(self, hidden: Array, decoder) -> Array:
    c = self.config
    h = dense(c, c.hidden_size, (None,), ("embed",), name="transform")(hidden)
    h = activation(c)(h)
    h = layer_norm(c, "transform_norm")(h)
    logits = decoder(h)
    bias = self.param("output_bias", zeros_init(("vocab",)), (c.vocab_size,), jnp.dtype(c.param_dtype))
    logits = logits + bias.astype(logits.dtype)
    return constrain(logits, ("batch", "length", "vocab"))


class NspHead(nn.Module):
  """Two-way classifier over the pooled output: is segment B the real next segment (NSP/SOP)."""

  config: BertConfig

  @nn.compact
  def __call__(self, pooled: Array) -> Array:
    return dense(self.config, 2, ("embed",), (None,), name="classifier")(pooled)


def gather_positions(hidden: Array, positions: Array) -> Array:
  """(B, L, H), (B, P) -> (B, P, H): BERT computes MLM logits only at the masked positions."""
  return jnp.take_along_axis(hidden, positions[..., None].astype(jnp.int32), axis=1)


class BertForPreTraining(nn.Module):
  """BertModel + MLM head (+ NSP head). With `masked_positions` the vocabulary logits are computed
  only there, as BERT's own pretraining does; without, at every position."""

  config: BertConfig
  nsp: bool = True

  def setup(self):
    if self.config.pooling != "cls" and self.nsp:
      raise ValueError(f"the NSP head reads BERT's [CLS] pooler; pooling={self.config.pooling!r} has none")
    self.bert = BertModel(self.config)
    self.mlm = MlmHead(self.config)
    self.nsp_head = NspHead(self.config) if self.nsp else None

  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    *,
    segment_ids=None,
    masked_positions=None,
    deterministic=True,
  ) -> dict[str, Array]:
    out = self.bert(
      input_ids,
      attention_mask,
      token_type_ids,
      position_ids,
      segment_ids=segment_ids,
      deterministic=deterministic,
    )
    hidden = out["last_hidden_state"]
    if masked_positions is not None:
      hidden = gather_positions(hidden, masked_positions)
    out["mlm_logits"] = self.mlm(hidden, self.bert.attend)
    if self.nsp_head is not None:
      out["nsp_logits"] = self.nsp_head(out["pooler_output"])
    return out
