"""Task heads on top of BertModel. Heads produce logits; losses live in objectives.py."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.bert import BertModel, gather_positions
from bert_jax.models.config import BertConfig
from bert_jax.models.dropout import Dropout
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


# --- fine-tuning heads ----------------------------------------------------------------------------
# Each returns {"logits": ...} (span: "start_logits"/"end_logits") and the encoder outputs. Parameter
# names follow HuggingFace's task models (`classifier`, `qa_outputs`) so checkpoints convert both ways.

TASK_KINDS = ("classification", "regression", "tagging", "span", "choice")


class BertForSequenceClassification(nn.Module):
  """Pooled output -> dropout -> dense: `num_labels` logits, or one score for regression (num_labels=1)."""

  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    *,
    segment_ids=None,
    cls_positions=None,
    deterministic=True,
  ) -> dict[str, Array]:
    """With packed rows (data/packing.py: segment_ids, position_ids and cls_positions (B, P)), logits
    are (B, P, num_labels): one per packed example."""
    c = self.config
    out = BertModel(c, name="bert")(
      input_ids,
      attention_mask,
      token_type_ids,
      position_ids,
      segment_ids=segment_ids,
      cls_positions=cls_positions,
      deterministic=deterministic,
    )
    pooled = Dropout(c.dropout_rate)(out["pooler_output"], deterministic=deterministic)
    out["logits"] = dense(c, self.num_labels, ("embed",), (None,), name="classifier")(pooled)
    return out


class BertForTokenClassification(nn.Module):
  """Per-token logits (B, L, num_labels): tagging (NER, POS). Losses read the first sub-token of each word."""

  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    *,
    segment_ids=None,
    deterministic=True,
  ) -> dict[str, Array]:
    c = self.config
    out = BertModel(c, with_pooler=False, name="bert")(
      input_ids,
      attention_mask,
      token_type_ids,
      position_ids,
      segment_ids=segment_ids,
      deterministic=deterministic,
    )
    hidden = Dropout(c.dropout_rate)(out["last_hidden_state"], deterministic=deterministic)
    logits = dense(c, self.num_labels, ("embed",), (None,), name="classifier")(hidden)
    out["logits"] = constrain(logits, ("batch", "length", None))
    return out


class BertForQuestionAnswering(nn.Module):
  """Span extraction (SQuAD): start and end logits (B, L) from one dense layer over the last hidden states."""

  config: BertConfig

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    *,
    segment_ids=None,
    deterministic=True,
  ) -> dict[str, Array]:
    c = self.config
    out = BertModel(c, with_pooler=False, name="bert")(
      input_ids,
      attention_mask,
      token_type_ids,
      position_ids,
      segment_ids=segment_ids,
      deterministic=deterministic,
    )
    logits = dense(c, 2, ("embed",), (None,), name="qa_outputs")(out["last_hidden_state"])
    out["start_logits"] = constrain(logits[..., 0], ("batch", "length"))
    out["end_logits"] = constrain(logits[..., 1], ("batch", "length"))
    return out


class BertForMultipleChoice(nn.Module):
  """Inputs (B, C, L): each choice is encoded as its own sequence, its pooled output scored by one dense
  unit; logits (B, C) compete in a softmax over the choices (SWAG)."""

  config: BertConfig

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    *,
    segment_ids=None,
    deterministic=True,
  ) -> dict[str, Array]:
    c = self.config
    if input_ids.ndim == 2:  # (B, L): one choice each (what shape-only initialisation passes)
      input_ids, attention_mask, token_type_ids, position_ids, segment_ids = (
        None if x is None else x[:, None]
        for x in (input_ids, attention_mask, token_type_ids, position_ids, segment_ids)
      )
    batch, choices, length = input_ids.shape

    def flat(x):
      return None if x is None else x.reshape(batch * choices, length)

    out = BertModel(c, name="bert")(
      flat(input_ids),
      flat(attention_mask),
      flat(token_type_ids),
      flat(position_ids),
      segment_ids=flat(segment_ids),
      deterministic=deterministic,
    )
    pooled = Dropout(c.dropout_rate)(out["pooler_output"], deterministic=deterministic)
    scores = dense(c, 1, ("embed",), (None,), name="classifier")(pooled)
    out["logits"] = scores.reshape(batch, choices)
    return out


def task_model(config: BertConfig, kind: str, num_labels: int = 0) -> nn.Module:
  """The head model for a fine-tuning task kind (see TASK_KINDS)."""
  if kind == "classification":
    if num_labels < 2:
      raise ValueError(f"classification needs at least 2 labels, got num_labels={num_labels}")
    return BertForSequenceClassification(config, num_labels)
  if kind == "regression":
    return BertForSequenceClassification(config, 1)
  if kind == "tagging":
    if num_labels < 1:
      raise ValueError(f"tagging needs at least one tag, got num_labels={num_labels}")
    return BertForTokenClassification(config, num_labels)
  if kind == "span":
    return BertForQuestionAnswering(config)
  if kind == "choice":
    return BertForMultipleChoice(config)
  raise ValueError(f"unknown task kind {kind!r}; known: {list(TASK_KINDS)}")
