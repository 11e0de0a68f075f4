"""The `Predictor`: a fine-tuned BERT answering in its task's terms (labels with probabilities, scores,
answer spans, tagged words and entities, a chosen ending), batched and jit-compiled per length bucket.

    from bert_jax.predict import Predictor
    p = Predictor.from_pretrained("runs/sst2/export")
    p.predict("This is a sample sentence.")   # {"label": "pos", "probabilities": {...}, "logits": [...]}
    p.answer("Who wrote it?", "Moby Dick was written by Herman Melville.")   # span QA
    p.choose("She opened the door.", ["She walked in.", "The door ate."])     # multiple choice

Model folders are read by predict_folders.py, outputs decoded by predict_outputs.py; the command line is
predict.py's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from bert_jax import batching, convert, hub, predict_outputs
from bert_jax.predict_folders import HF_FOR_KIND, PredictorError, read_task_folder


class Predictor:
  """A fine-tuned BERT answering in its task's own terms; batched and jit-compiled per length bucket."""

  def __init__(self, config, params: dict, tokenizer, task: dict, source: str = ""):
    from bert_jax.models import task_model

    self.config, self.params, self.tokenizer, self.task, self.source = config, params, tokenizer, task, source
    self.kind = task["kind"]
    self.labels = list(task.get("labels", []))
    self.max_seq_length = min(int(task.get("max_seq_length", 512)), config.max_position_embeddings)
    self.model = task_model(config, self.kind, len(self.labels))

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike) -> Predictor:
    from bert_jax.tokenization import Tokenizer

    path = hub.local_folder(path)  # hf://ORG/NAME: a fine-tuned model on the Hub
    config, params, task = read_task_folder(path)
    tokenizer = Tokenizer.from_pretrained(path)
    predictor = cls(config, params, tokenizer, task, path)
    predictor.params = predictor._checked_params(params, path)
    return predictor

  def _checked_params(self, params: dict, path: str) -> dict:
    """The read parameters as the model's tree (on device), after checking them against its shapes."""
    expected = self._shapes()
    missing = sorted(set(expected) - set(params))
    if missing:
      raise PredictorError(f"{path}: the parameters lack {missing} for a {self.kind} model")
    # Older transformers saved a pooler in token-classification and QA models, which use none.
    unused = ("bert/pooler",) if self.kind in ("tagging", "span") else ()
    convert.check_against(
      {k: params[k] for k in params if k in expected}, expected, source=path, allow_unused=unused
    )
    if unused:
      params["bert"] = {k: v for k, v in params["bert"].items() if k != "pooler"}
    return {k: _to_jnp(params[k]) for k in expected}

  def _shapes(self) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(lambda: self.model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    return nn.meta.unbox(shapes["params"])

  @functools.cached_property
  def _forward(self):
    import jax

    model = self.model

    @jax.jit
    def run(params, input_ids, attention_mask, token_type_ids):
      out = model.apply({"params": params}, input_ids, attention_mask, token_type_ids)
      keys = ("start_logits", "end_logits") if "start_logits" in out else ("logits",)
      return {k: out[k] for k in keys}

    return run

  def _run(self, features: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Outputs for every row, in the rows' order: longest first in batches of batch_size rows, each padded to
    its own length bucket (`batching.run_by_length`). Token-level outputs come back at the longest batch's
    width, the columns a shorter batch did not compute filled with -1e9 (positions past every real token)."""
    token_level = ("logits",) if self.kind == "tagging" else ("start_logits", "end_logits")
    return batching.run_by_length(
      features, batch_size, functools.partial(self._forward, self.params), token_level, fill=-1e9
    )

  # -- classification, regression, tagging --

  def predict(
    self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None, *, batch_size: int = 32
  ) -> dict | list[dict]:
    """Labels with probabilities (classification), a score (regression), or words with tags and
    entities with character offsets (tagging). One text in, one dict out; a list in, a list out."""
    from bert_jax.pretrained import text_lists

    single, texts, pairs = text_lists(texts, pairs, "predict", PredictorError)
    if self.kind == "span":
      raise PredictorError("this is a span QA model: call answer(question, context)")
    if self.kind == "choice":
      raise PredictorError("this is a multiple-choice model: call choose(context, endings)")
    if not texts:
      return []
    results = (
      self._tag(texts, batch_size) if self.kind == "tagging" else self._classify(texts, pairs, batch_size)
    )
    return results[0] if single else results

  def _classify(self, texts, pairs, batch_size) -> list[dict]:
    enc = self.tokenizer(texts, pairs, max_length=self.max_seq_length, truncation=True, padding="max_length")
    logits = self._run(enc, batch_size)["logits"]
    if self.kind == "regression":
      return predict_outputs.scores(logits)
    return predict_outputs.classified(logits, self.labels)

  def _tag(self, texts, batch_size) -> list[dict]:
    encodings = [self.tokenizer.encode(t, max_length=self.max_seq_length) for t in texts]
    width = self.max_seq_length
    features = {
      key: np.stack([np.pad(np.asarray(e[key], np.int32), (0, width - len(e[key]))) for e in encodings])
      for key in ("input_ids", "attention_mask", "token_type_ids")
    }
    logits = self._run(features, batch_size)["logits"]
    return [
      predict_outputs.tagged(text, enc["tokens"], enc["offsets"], row, self.labels)
      for text, enc, row in zip(texts, encodings, logits)
    ]

  # -- span QA --

  def answer(
    self, questions: str | Sequence[str], contexts: str | Sequence[str], *, batch_size: int = 32
  ) -> dict | list[dict]:
    """The answer's text and character offsets in its context; for SQuAD 2.0 models, "" with
    no_answer=True when the no-answer score wins (by the threshold tuned on dev)."""
    if self.kind != "span":
      raise PredictorError(f"answer() needs a span QA model; this one is {self.kind}")
    single = isinstance(questions, str)
    questions = [questions] if single else list(questions)
    if not questions:
      return []
    contexts = [contexts] if isinstance(contexts, str) else list(contexts)
    if len(questions) != len(contexts):
      raise PredictorError(f"answer: {len(questions)} questions but {len(contexts)} contexts")
    examples, features = self._squad_features(questions, contexts)
    predictions = self._best_spans(examples, features, self._span_logits(features, batch_size))
    results = [predict_outputs.answered(predictions[e.qid]) for e in examples]
    return results[0] if single else results

  def _squad_features(self, questions: list[str], contexts: list[str]):
    """(examples, features): each question with its context, cut into windows of the model's length."""
    from bert_jax.data import squad

    settings = self.task.get("squad", {})
    examples = [squad.QAExample(str(i), q, c, [], False) for i, (q, c) in enumerate(zip(questions, contexts))]
    features = squad.make_features(
      examples,
      self.tokenizer,
      max_seq_length=self.max_seq_length,
      doc_stride=settings.get("doc_stride", 128),
      max_query_length=settings.get("max_query_length", 64),
      training=False,
    )
    return examples, features

  def _span_logits(self, features, batch_size: int) -> dict[str, np.ndarray]:
    """Start and end logits of every window, at the windows' full width."""
    arrays = {
      "input_ids": features.input_ids,
      "attention_mask": features.attention_mask,
      "token_type_ids": features.token_type_ids,
    }
    out = self._run(arrays, batch_size)
    width = features.input_ids.shape[1]  # _run trims padding columns; postprocess indexes full windows
    return {k: np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=-1e9) for k, v in out.items()}

  def _best_spans(self, examples, features, out: dict[str, np.ndarray]) -> dict:
    """qid -> the best answer span (or none, for SQuAD 2.0 models) by the task's SQuAD settings."""
    from bert_jax.data import squad

    settings = self.task.get("squad", {})
    threshold = self.task.get(
      "tuned_null_score_diff_threshold", settings.get("null_score_diff_threshold", 0.0)
    )
    return squad.postprocess(
      examples,
      features,
      out["start_logits"],
      out["end_logits"],
      n_best=settings.get("n_best", 20),
      max_answer_length=settings.get("max_answer_length", 30),
      version_2=settings.get("version_2", False),
      null_score_diff_threshold=threshold,
    )

  # -- multiple choice --

  def choose(self, context: str, endings: Sequence[str]) -> dict:
    """Which ending follows the context: the index, and a probability per ending."""
    from bert_jax.data import tasks

    if self.kind != "choice":
      raise PredictorError(f"choose() needs a multiple-choice model; this one is {self.kind}")
    example = tasks.ChoiceExample(context, list(endings), None, 0)
    features = tasks.choice_features([example], self.tokenizer, self.max_seq_length)
    return predict_outputs.chosen(self._run(features, 1)["logits"][0])

  # -- saving --

  def save_pretrained(self, directory: str | os.PathLike) -> str:
    """Writes the model as a HuggingFace BertFor<Task> folder (config.json with the architecture and the
    labels, model.safetensors, the tokenizer files) that transformers' AutoModelFor<Task> and this class load
    as it is. What config.json cannot hold stays behind: the task's max_seq_length and SQuAD settings (the
    bert_jax export keeps them). A model HuggingFace's BERT cannot compute (another attention, positions,
    pre-LN, GeGLU, mean or max pooling under a pooled head) is refused with the reason."""
    import jax

    from bert_jax.pretrained import write_hf_folder

    hf = self._hf_config()
    directory = os.fspath(directory)
    write_hf_folder(
      directory, convert.params_to_hf(jax.device_get(self.params), self.config), hf, self.tokenizer
    )
    return directory

  def _hf_config(self) -> dict:
    """HuggingFace's config.json for this model and task: the architecture and the labels."""
    if self.kind in ("classification", "regression", "choice") and self.config.pooling != "cls":
      raise PredictorError(
        f"pooling={self.config.pooling!r}: HuggingFace's {HF_FOR_KIND[self.kind]} pools the [CLS] vector "
        "through a dense + tanh layer; keep this model in bert_jax's own export"
      )
    try:
      hf = self.config.to_hf_dict()
    except ValueError as e:
      raise PredictorError(str(e)) from None
    if self.kind in ("classification", "tagging"):
      labels = self.labels
    elif self.kind == "regression":
      labels = ["LABEL_0"]
      hf["problem_type"] = "regression"
    else:  # span: two outputs (start, end); choice: one score per ending, HF's default labels
      labels = ["LABEL_0", "LABEL_1"]
    hf.update(
      architectures=[HF_FOR_KIND[self.kind]],
      id2label={str(i): label for i, label in enumerate(labels)},
      label2id={label: i for i, label in enumerate(labels)},
    )
    return hf


def _to_jnp(tree):
  import jax
  import jax.numpy as jnp

  return jax.tree.map(jnp.asarray, tree)
