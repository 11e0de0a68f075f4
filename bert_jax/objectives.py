"""Pretraining objectives: name -> loss_and_metrics(outputs, batch). Models know no losses.

Batches follow BERT's pretraining features: `input_ids`, `attention_mask`, `token_type_ids`,
`masked_positions` (B, P), `masked_ids` (B, P; the original tokens there), `masked_weights` (B, P;
0 for padding predictions) and, for the sentence-pair tasks, `nsp_labels` (B,). For NSP 1 means
segment B is a random segment, for SOP (ALBERT's sentence-order prediction) 1 means the two
segments are swapped; 0 is the real, in-order pair for both.

Each objective is registered with what it asks of the model and the data: its sentence-pair task
(`pair_task`: "nsp", "sop" or None) and its model family (`model_family`: "bert" for
BertForPreTraining, "electra" for ElectraForPretraining, "task" for the fine-tuning heads).

Fine-tuning objectives are named after the task kinds (models/heads.py TASK_KINDS) and read `labels`
(classification, regression, choice: (B,); tagging: (B, L) with -100 where no word starts) or
`start_positions`/`end_positions` (span); rows with `valid` = 0 (filler of a last partial batch) count
for nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Objective = Callable[[dict, dict], tuple[jax.Array, dict]]

PAIR_TASKS = ("nsp", "sop")
MODEL_FAMILIES = ("bert", "electra", "task")
# ELECTRA's weight on the discriminator loss: its per-token binary loss is far smaller than the
# generator's vocabulary-wide cross-entropy, and the paper found 50 works best.
ELECTRA_RTD_WEIGHT = 50.0


@dataclasses.dataclass(frozen=True)
class _Entry:
  fn: Objective
  pair_task: str | None
  model_family: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, pair_task: str | None = None, model_family: str = "bert"):
  if pair_task not in PAIR_TASKS + (None,):
    raise ValueError(
      f"objective {name!r}: pair_task={pair_task!r} (expected one of {list(PAIR_TASKS)} or None)"
    )
  if model_family not in MODEL_FAMILIES:
    raise ValueError(
      f"objective {name!r}: model_family={model_family!r} (expected one of {list(MODEL_FAMILIES)})"
    )

  def wrap(fn: Objective) -> Objective:
    if name in _REGISTRY:
      raise ValueError(f"objective {name!r} is registered twice")
    _REGISTRY[name] = _Entry(fn, pair_task, model_family)
    return fn

  return wrap


def _entry(name: str) -> _Entry:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown objective {name!r}; registered objectives are {names()}") from None


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> Objective:
  return _entry(name).fn


def pair_task(name: str) -> str | None:
  """The sentence-pair task the objective trains on `nsp_labels` ("nsp" or "sop"), or None."""
  return _entry(name).pair_task


def uses_nsp(name: str) -> bool:
  """Whether the model needs the two-way sentence-pair head (NSP and SOP share it)."""
  return pair_task(name) is not None


def model_family(name: str) -> str:
  """The model the objective needs: "bert" (BertForPreTraining) or "electra" (ElectraForPretraining)."""
  return _entry(name).model_family


# --- losses -----------------------------------------------------------------------------------


def _mlm(outputs, batch):
  logits = outputs["mlm_logits"].astype(jnp.float32)  # (B, P, V): logits at the masked positions only
  weights = batch["masked_weights"].astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["masked_ids"])
  count = jnp.maximum(weights.sum(), 1.0)
  loss = (losses * weights).sum() / count
  accuracy = ((logits.argmax(-1) == batch["masked_ids"]) * weights).sum() / count
  return loss, {"mlm_loss": loss, "mlm_accuracy": accuracy}


def _pair(outputs, batch, task: str):
  """Cross-entropy of the two-way pair head; NSP and SOP differ only in what label 1 means."""
  logits = outputs["nsp_logits"].astype(jnp.float32)
  # Evaluation batches mark the rows that only fill out a last partial batch with valid = 0.
  rows = batch["valid"].astype(jnp.float32) if "valid" in batch else jnp.ones(logits.shape[0], jnp.float32)
  count = jnp.maximum(rows.sum(), 1.0)
  loss = (optax.softmax_cross_entropy_with_integer_labels(logits, batch["nsp_labels"]) * rows).sum() / count
  accuracy = ((logits.argmax(-1) == batch["nsp_labels"]) * rows).sum() / count
  return loss, {f"{task}_loss": loss, f"{task}_accuracy": accuracy}


@register("mlm")
def mlm(outputs, batch):
  loss, metrics = _mlm(outputs, batch)
  return loss, dict(metrics, loss=loss)


def _mlm_pair(outputs, batch, task: str):
  mlm_loss, metrics = _mlm(outputs, batch)
  pair_loss, pair_metrics = _pair(outputs, batch, task)
  loss = mlm_loss + pair_loss
  return loss, dict(metrics, **pair_metrics, loss=loss)


@register("mlm_nsp", pair_task="nsp")
def mlm_nsp(outputs, batch):
  return _mlm_pair(outputs, batch, "nsp")


@register("mlm_sop", pair_task="sop")
def mlm_sop(outputs, batch):
  return _mlm_pair(outputs, batch, "sop")


def replaced_token_labels(corrupted_ids: jax.Array, batch) -> jax.Array:
  """1 where the discriminator's input differs from the original text, else 0; (B, L) float32.

  The original text is `input_ids` with `masked_ids` written back at the real prediction slots
  (weight > 0). Comparing against what the discriminator actually saw, rather than the sample
  against `masked_ids` slot by slot, keeps the labels right when a sample equals the original, when
  slots repeat a position, and when an unused slot made the model overwrite a token.
  """
  input_ids = batch["input_ids"]
  positions = batch["masked_positions"].astype(jnp.int32)
  real = (batch["masked_weights"] > 0).astype(jnp.int32)
  rows = jnp.arange(input_ids.shape[0])[:, None]
  # Scatter-max makes repeated positions deterministic: a real slot wins over an unused one.
  has_original = jnp.zeros_like(input_ids, jnp.int32).at[rows, positions].max(real)
  restored = jnp.zeros_like(input_ids).at[rows, positions].max(jnp.where(real > 0, batch["masked_ids"], 0))
  original = jnp.where(has_original > 0, restored, input_ids)
  return (corrupted_ids != original).astype(jnp.float32)


def electra_loss(outputs, batch, rtd_weight: float = ELECTRA_RTD_WEIGHT):
  """ELECTRA: the generator's MLM loss + rtd_weight x the discriminator's binary cross-entropy,
  averaged over real (non-padding) tokens."""
  mlm_loss, metrics = _mlm(outputs, batch)
  logits = outputs["rtd_logits"].astype(jnp.float32)
  labels = replaced_token_labels(outputs["corrupted_ids"], batch)
  real = batch["attention_mask"].astype(jnp.float32)
  count = jnp.maximum(real.sum(), 1.0)
  rtd_loss = (optax.sigmoid_binary_cross_entropy(logits, labels) * real).sum() / count
  accuracy = (((logits > 0) == (labels > 0)) * real).sum() / count
  loss = mlm_loss + rtd_weight * rtd_loss
  return loss, dict(
    metrics,
    loss=loss,
    rtd_loss=rtd_loss,
    rtd_accuracy=accuracy,
    rtd_replaced_fraction=(labels * real).sum() / count,
  )


register("electra", model_family="electra")(functools.partial(electra_loss, rtd_weight=ELECTRA_RTD_WEIGHT))


# --- fine-tuning ---------------------------------------------------------------------------------

IGNORE_INDEX = -100  # tagging labels on sub-tokens after a word's first, [CLS]/[SEP] and padding


def _rows(batch, shape) -> jax.Array:
  """Per-example weights: `valid` (0 for filler), else all ones of `shape` (examples, or packed slots)."""
  return batch["valid"].astype(jnp.float32) if "valid" in batch else jnp.ones(shape, jnp.float32)


def _weighted_ce(logits, labels, weights):
  count = jnp.maximum(weights.sum(), 1.0)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  loss = (losses * weights).sum() / count
  accuracy = ((logits.argmax(-1) == labels) * weights).sum() / count
  return loss, accuracy


@register("classification", model_family="task")
def classification(outputs, batch):
  logits = outputs["logits"]
  loss, accuracy = _weighted_ce(logits, batch["labels"], _rows(batch, logits.shape[0]))
  return loss, {"loss": loss, "accuracy": accuracy}


@register("choice", model_family="task")
def choice(outputs, batch):
  return classification(outputs, batch)


@register("regression", model_family="task")
def regression(outputs, batch):
  scores = outputs["logits"][..., 0].astype(jnp.float32)
  rows = _rows(batch, scores.shape[0])
  loss = (jnp.square(scores - batch["labels"].astype(jnp.float32)) * rows).sum() / jnp.maximum(
    rows.sum(), 1.0
  )
  return loss, {"loss": loss}


@register("tagging", model_family="task")
def tagging(outputs, batch):
  logits, labels = outputs["logits"], batch["labels"]
  weights = (labels != IGNORE_INDEX).astype(jnp.float32) * _rows(batch, labels.shape[0])[:, None]
  loss, accuracy = _weighted_ce(logits, jnp.maximum(labels, 0), weights)
  return loss, {"loss": loss, "token_accuracy": accuracy}


def _span_logits(logits, positions, batch):
  """Padded rows: the logits as they are. Packed rows (data/packing.py; positions (R, P)): one copy per slot,
  its example's tokens (segment id slot + 1) kept and every other position pushed out of the softmax."""
  if positions.ndim == 1:
    return logits
  slots = jnp.arange(1, positions.shape[1] + 1, dtype=batch["segment_ids"].dtype)
  own = batch["segment_ids"][:, None, :] == slots[None, :, None]
  return jnp.where(own, logits[:, None, :].astype(jnp.float32), -1e9)


@register("span", model_family="task")
def span(outputs, batch):
  """BERT's SQuAD loss: the mean of the start and end cross-entropies over the sequence positions (as
  BERT's run_squad.py, padding positions included). Packed rows: each example's own positions only."""
  starts, ends = batch["start_positions"], batch["end_positions"]
  rows = _rows(batch, starts.shape)
  start_loss, start_acc = _weighted_ce(_span_logits(outputs["start_logits"], starts, batch), starts, rows)
  end_loss, end_acc = _weighted_ce(_span_logits(outputs["end_logits"], ends, batch), ends, rows)
  loss = (start_loss + end_loss) / 2
  return loss, {"loss": loss, "start_accuracy": start_acc, "end_accuracy": end_acc}
