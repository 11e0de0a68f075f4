"""The bert_jax model: one functional Flax linen BERT."""

from bert_jax.models.bert import BertEncoder, BertModel, scan_params, unscan_params
from bert_jax.models.config import BertConfig
from bert_jax.models.electra import ElectraForPretraining
from bert_jax.models.heads import BertForPreTraining, MlmHead, NspHead

__all__ = [
  "BertConfig",
  "BertEncoder",
  "BertModel",
  "BertForPreTraining",
  "ElectraForPretraining",
  "MlmHead",
  "NspHead",
  "scan_params",
  "unscan_params",
]
