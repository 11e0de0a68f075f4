"""The bert_jax model: one functional Flax linen BERT."""

from bert_jax.models.bert import BertEncoder, BertModel, scan_params, unscan_params
from bert_jax.models.config import BertConfig
from bert_jax.models.electra import ElectraForPretraining
from bert_jax.models.heads import (
  TASK_KINDS,
  BertForMultipleChoice,
  BertForPreTraining,
  BertForQuestionAnswering,
  BertForSequenceClassification,
  BertForTokenClassification,
  MlmHead,
  NspHead,
  task_model,
)

__all__ = [
  "TASK_KINDS",
  "BertConfig",
  "BertEncoder",
  "BertForMultipleChoice",
  "BertForPreTraining",
  "BertForQuestionAnswering",
  "BertForSequenceClassification",
  "BertForTokenClassification",
  "BertModel",
  "ElectraForPretraining",
  "MlmHead",
  "NspHead",
  "scan_params",
  "task_model",
  "unscan_params",
]
