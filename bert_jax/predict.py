"""Inference: the `Predictor` API and CLI. Text in; labels, scores, answer spans or entities out.

    from bert_jax.predict import Predictor
    p = Predictor.from_pretrained("runs/sst2/export")
    p.predict("This is a sample sentence.")   # {"label": "pos", "probabilities": {...}, "logits": [...]}
    p.answer("Who wrote it?", "Moby Dick was written by Herman Melville.")   # span QA
    p.choose("She opened the door.", ["She walked in.", "The door ate."])     # multiple choice

A fine-tuned model folder is what the fine-tuning runner exports (`WORKDIR/export`: bert_jax_config.json
with a "task" entry, params.safetensors, tokenizer files), or a HuggingFace BertFor<Task> folder
(BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering,
BertForMultipleChoice), whose config.json names the architecture and labels.

CLI, JSON lines in and out (a plain line is {"text": line}):

    python -m bert_jax.predict --model DIR FILE|-
    python -m bert_jax.predict --model DIR --save-hf OUT   # as a HuggingFace BertFor<Task> folder

  classification / regression / tagging: {"text": ..., "pair": ...}
  span QA:                               {"question": ..., "context": ...}
  multiple choice:                       {"context": ..., "endings": [...]}
A pretrained encoder without a task head answers with its pooled embedding ({"embedding": [...]}).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from bert_jax import batching, convert, hub

HF_ARCHITECTURES = {
  "BertForSequenceClassification": "classification",
  "BertForTokenClassification": "tagging",
  "BertForQuestionAnswering": "span",
  "BertForMultipleChoice": "choice",
}


# The architecture each task is saved as (regression: BertForSequenceClassification with one label).
HF_FOR_KIND = {kind: name for name, kind in HF_ARCHITECTURES.items()} | {
  "regression": "BertForSequenceClassification"
}


class PredictorError(ValueError):
  pass


class NoTaskHead(PredictorError):
  """The folder holds a pretrained encoder (or a checkpoint without a fine-tuned head)."""


# --- fine-tuned model folders ------------------------------------------------------------------


def save_task_model(directory: str, bert, params: dict, tokenizer, task: dict) -> None:
  """Writes a fine-tuned model: the parameter tree (encoder + head), the model config and the task
  (kind, label names, sequence length, metric, SQuAD settings) for the Predictor."""
  from bert_jax.pretrained import write_bert_jax_folder

  write_bert_jax_folder(directory, bert, params, tokenizer, task=task)


def _read_bert_jax(path: str):
  from safetensors.numpy import load_file

  from bert_jax.models import BertConfig
  from bert_jax.models.config import read_json
  from bert_jax.pretrained import BERT_JAX_CONFIG, BERT_JAX_PARAMS

  config_path = os.path.join(path, BERT_JAX_CONFIG)
  meta = read_json(config_path)
  task = meta.get("task")
  if not isinstance(task, dict) or "kind" not in task:
    raise NoTaskHead(
      f"{config_path}: no fine-tuned task in this folder (a pretrained encoder); use "
      "bert_jax.from_pretrained for embeddings, or fine-tune it first (configs/finetune.py)"
    )
  config = BertConfig.from_dict(meta["model"], source=config_path)
  return config, convert.unflatten(load_file(os.path.join(path, BERT_JAX_PARAMS))), task


def _read_huggingface(path: str):
  from bert_jax.models import BertConfig
  from bert_jax.models.config import read_json

  config_path = os.path.join(path, "config.json")
  hf = read_json(config_path)
  architectures = [a for a in hf.get("architectures") or [] if a in HF_ARCHITECTURES]
  if not architectures:
    raise NoTaskHead(
      f"{config_path}: architectures={hf.get('architectures')} has no task head; the Predictor serves "
      f"{sorted(HF_ARCHITECTURES)} (use bert_jax.from_pretrained for a bare encoder)"
    )
  kind = HF_ARCHITECTURES[architectures[0]]
  config = BertConfig.from_hf_dict(hf, source=config_path)
  state, source = convert.read_hf_weights(path)
  id2label = hf.get("id2label") or {}
  # transformers 5 leaves id2label (and num_labels) out of config.json when they are its defaults:
  # the classifier's rows say how many labels there are.
  classifier = state.get("classifier.weight")
  count = len(id2label) or (classifier.shape[0] if classifier is not None else int(hf.get("num_labels", 2)))
  labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]
  if kind == "classification" and (hf.get("problem_type") == "regression" or len(labels) == 1):
    kind, labels = "regression", []
  params = convert.hf_to_params(state, config, source=source)
  max_len = int(hf.get("max_position_embeddings", 512))
  task = {
    "kind": kind,
    "labels": labels if kind in ("classification", "tagging") else [],
    "max_seq_length": max_len,
  }
  if kind == "span":
    task["squad"] = {
      "version_2": False,
      "n_best": 20,
      "max_answer_length": 30,
      "null_score_diff_threshold": 0.0,
    }
  return config, params, task


# --- tagging helpers -----------------------------------------------------------------------------


def words_from_pieces(
  tokens: Sequence[str], offsets: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int]]:
  """[(first piece index, start char, end char)] per word: a word is a piece not starting with "##"
  and the "##" pieces after it ([CLS]/[SEP] and other zero-width pieces are skipped)."""
  words: list[list[int]] = []
  for i, (token, (start, end)) in enumerate(zip(tokens, offsets)):
    if start == end:
      continue
    if token.startswith("##") and words:
      words[-1][2] = end
    else:
      words.append([i, start, end])
  return [tuple(w) for w in words]


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """[(type, first word, last word)] from chunk tags, IOB1, IOB2 or IOBES (B-, I-, E-, S-), read as conlleval
  and seqeval read them, which `metrics.entity_scores` scores with: a chunk ends after E- or S-, before B-, S-
  or O, and where the type changes; it starts at B- or S-, or at an I- or E- that continues no chunk (after O,
  E-, S- or another type)."""
  entities, current, prev_prefix = [], None, "O"
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, _, kind = tag.partition("-") if tag != "O" else ("O", "", "")
    if current is not None and (prev_prefix in ("E", "S") or prefix in ("B", "S", "O") or kind != current[0]):
      entities.append(tuple(current))
      current = None
    if prefix in ("B", "S") or (prefix in ("I", "E") and current is None):
      current = [kind, i, i]
    elif current is not None:
      current[2] = i
    prev_prefix = prefix
  return entities


def _is_bio(labels: Sequence[str]) -> bool:
  return any(label.startswith(("B-", "I-", "E-", "S-")) for label in labels)


# --- the Predictor -------------------------------------------------------------------------------


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
    from bert_jax.pretrained import detect_format
    from bert_jax.tokenization import Tokenizer

    path = hub.local_folder(path)  # hf://ORG/NAME: a fine-tuned model on the Hub
    kind = detect_format(path)
    if kind == "bert_jax":
      config, params, task = _read_bert_jax(path)
    elif kind == "huggingface":
      config, params, task = _read_huggingface(path)
    else:
      raise NoTaskHead(f"{path}: a Google pretraining checkpoint has no fine-tuned task head")
    tokenizer = Tokenizer.from_pretrained(path)
    predictor = cls(config, params, tokenizer, task, path)
    expected = predictor._shapes()
    missing = sorted(set(expected) - set(params))
    if missing:
      raise PredictorError(f"{path}: the parameters lack {missing} for a {predictor.kind} model")
    # Older transformers saved a pooler in token-classification and QA models, which use none.
    unused = ("bert/pooler",) if predictor.kind in ("tagging", "span") else ()
    convert.check_against(
      {k: params[k] for k in params if k in expected}, expected, source=path, allow_unused=unused
    )
    if unused:
      params["bert"] = {k: v for k, v in params["bert"].items() if k != "pooler"}
    predictor.params = {k: _to_jnp(params[k]) for k in expected}
    return predictor

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
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    if pairs is not None:
      pairs = [pairs] if isinstance(pairs, str) else list(pairs)
      if len(pairs) != len(texts):
        raise PredictorError(f"predict: {len(texts)} texts but {len(pairs)} pairs")
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
      return [{"score": float(row[0])} for row in logits]
    shifted = logits - logits.max(-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    return [
      {
        "label": self.labels[int(row.argmax())],
        "probabilities": {label: round(float(p), 6) for label, p in zip(self.labels, row)},
        "logits": [round(float(v), 6) for v in logit_row],
      }
      for row, logit_row in zip(probs, logits)
    ]

  def _tag(self, texts, batch_size) -> list[dict]:
    encodings = [self.tokenizer.encode(t, max_length=self.max_seq_length) for t in texts]
    width = self.max_seq_length
    features = {
      key: np.stack([np.pad(np.asarray(e[key], np.int32), (0, width - len(e[key]))) for e in encodings])
      for key in ("input_ids", "attention_mask", "token_type_ids")
    }
    logits = self._run(features, batch_size)["logits"]
    results = []
    for text, enc, row in zip(texts, encodings, logits):
      words = words_from_pieces(enc["tokens"], enc["offsets"])
      tags = [self.labels[int(row[first].argmax())] for first, _, _ in words]
      result: dict[str, Any] = {
        "words": [{"text": text[s:e], "start": s, "end": e, "tag": t} for (_, s, e), t in zip(words, tags)]
      }
      if _is_bio(self.labels):
        result["entities"] = [
          {"type": kind, "text": text[words[a][1] : words[b][2]], "start": words[a][1], "end": words[b][2]}
          for kind, a, b in bio_entities(tags)
        ]
      results.append(result)
    return results

  # -- span QA --

  def answer(
    self, questions: str | Sequence[str], contexts: str | Sequence[str], *, batch_size: int = 32
  ) -> dict | list[dict]:
    """The answer's text and character offsets in its context; for SQuAD 2.0 models, "" with
    no_answer=True when the no-answer score wins (by the threshold tuned on dev)."""
    from bert_jax.data import squad

    if self.kind != "span":
      raise PredictorError(f"answer() needs a span QA model; this one is {self.kind}")
    single = isinstance(questions, str)
    questions = [questions] if single else list(questions)
    if not questions:
      return []
    contexts = [contexts] if isinstance(contexts, str) else list(contexts)
    if len(questions) != len(contexts):
      raise PredictorError(f"answer: {len(questions)} questions but {len(contexts)} contexts")
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
    arrays = {
      "input_ids": features.input_ids,
      "attention_mask": features.attention_mask,
      "token_type_ids": features.token_type_ids,
    }
    out = self._run(arrays, batch_size)
    width = features.input_ids.shape[1]  # _run trims padding columns; postprocess indexes full windows
    out = {k: np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=-1e9) for k, v in out.items()}
    threshold = self.task.get(
      "tuned_null_score_diff_threshold", settings.get("null_score_diff_threshold", 0.0)
    )
    predictions = squad.postprocess(
      examples,
      features,
      out["start_logits"],
      out["end_logits"],
      n_best=settings.get("n_best", 20),
      max_answer_length=settings.get("max_answer_length", 30),
      version_2=settings.get("version_2", False),
      null_score_diff_threshold=threshold,
    )
    results = []
    for e in examples:
      p = predictions[e.qid]
      results.append(
        {
          "answer": p.text,
          "start": p.start_char,
          "end": p.end_char,
          "score": float(p.score),
          "no_answer": p.text == "" and p.start_char < 0,
        }
      )
    return results[0] if single else results

  # -- multiple choice --

  def choose(self, context: str, endings: Sequence[str]) -> dict:
    """Which ending follows the context: the index, and a probability per ending."""
    from bert_jax.data import tasks

    if self.kind != "choice":
      raise PredictorError(f"choose() needs a multiple-choice model; this one is {self.kind}")
    example = tasks.ChoiceExample(context, list(endings), None, 0)
    features = tasks.choice_features([example], self.tokenizer, self.max_seq_length)
    logits = self._run(features, 1)["logits"][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return {"label": int(logits.argmax()), "probabilities": [round(float(p), 6) for p in probs]}

  def save_pretrained(self, directory: str | os.PathLike) -> str:
    """Writes the model as a HuggingFace BertFor<Task> folder (config.json with the architecture and the
    labels, model.safetensors, the tokenizer files) that transformers' AutoModelFor<Task> and this class load
    as it is. What config.json cannot hold stays behind: the task's max_seq_length and SQuAD settings (the
    bert_jax export keeps them). A model HuggingFace's BERT cannot compute (another attention, positions,
    pre-LN, GeGLU, mean or max pooling under a pooled head) is refused with the reason."""
    import jax

    from bert_jax.pretrained import write_hf_folder

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
    directory = os.fspath(directory)
    write_hf_folder(
      directory, convert.params_to_hf(jax.device_get(self.params), self.config), hf, self.tokenizer
    )
    return directory


def _to_jnp(tree):
  import jax
  import jax.numpy as jnp

  return jax.tree.map(jnp.asarray, tree)


# --- CLI -----------------------------------------------------------------------------------------


def read_examples(lines: Iterable[str], source: str) -> Iterator[dict]:
  for number, line in enumerate(lines, 1):
    line = line.rstrip("\n")
    if not line.strip():
      continue
    if line.startswith("{"):
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{source}:{number}: line starts with '{{' but is not valid JSON ({e})") from None
      if not isinstance(obj, dict):
        raise ValueError(f"{source}:{number}: expected a JSON object")
      yield dict(obj, _line=number)
    else:
      yield {"text": line, "_line": number}


def _need(record: dict, field: str, source: str, kind: type = str):
  value = record.get(field)
  if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
    what = "a list of strings" if kind is list else "a string"
    raise ValueError(f'{source}:{record["_line"]}: expected a JSON object with {what} "{field}" field')
  return value


def _chunks(items: Iterator, size: int) -> Iterator[list]:
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _embedding_lines(bert, chunk, source, max_length, batch_size) -> Iterator[dict]:
  for record in chunk:
    _need(record, "text", source)
  pairs = [r.get("pair") for r in chunk]
  if any(p is not None for p in pairs) and not all(p is not None for p in pairs):
    # Pairs and singles in one batch would need two encodes; keep each line's own meaning.
    vectors = [
      bert.encode([r["text"]], [r["pair"]] if r.get("pair") is not None else None, max_length=max_length)[
        "pooler_output"
      ][0]
      for r in chunk
    ]
  else:
    has_pairs = pairs[0] is not None
    vectors = bert.encode(
      [r["text"] for r in chunk], pairs if has_pairs else None, max_length=max_length, batch_size=batch_size
    )["pooler_output"]
  for record, vector in zip(chunk, vectors):
    yield {
      "text": record["text"],
      **({"pair": record["pair"]} if record.get("pair") is not None else {}),
      "embedding": [round(float(v), 7) for v in vector],
    }


def _task_lines(predictor: Predictor, chunk, source, batch_size) -> Iterator[dict]:
  kind = predictor.kind
  if kind == "span":
    questions = [_need(r, "question", source) for r in chunk]
    contexts = [_need(r, "context", source) for r in chunk]
    outputs = predictor.answer(questions, contexts, batch_size=batch_size)
  elif kind == "choice":
    outputs = [
      predictor.choose(_need(r, "context", source), _need(r, "endings", source, list)) for r in chunk
    ]
  else:
    texts = [_need(r, "text", source) for r in chunk]
    with_pair = [i for i, r in enumerate(chunk) if r.get("pair") is not None]
    alone = [i for i, r in enumerate(chunk) if r.get("pair") is None]
    outputs = [None] * len(chunk)
    # Singles and pairs go in separate batches; each line keeps its own meaning and place.
    if alone:
      for i, out in zip(alone, predictor.predict([texts[i] for i in alone], batch_size=batch_size)):
        outputs[i] = out
    if with_pair:
      pairs = [_need(chunk[i], "pair", source) for i in with_pair]
      for i, out in zip(
        with_pair, predictor.predict([texts[i] for i in with_pair], pairs, batch_size=batch_size)
      ):
        outputs[i] = out
  for record, output in zip(chunk, outputs):
    yield {**{k: v for k, v in record.items() if k != "_line"}, **output}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m bert_jax.predict",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
    "--model",
    required=True,
    help="a fine-tuned model folder, a pretrained checkpoint folder, or hf://ORG/NAME[@REVISION] (the Hub)",
  )
  parser.add_argument(
    "--pooling",
    choices=("cls", "mean", "max"),
    default=None,
    help="embeddings of a pretrained encoder: default the checkpoint's (BERT's [CLS] pooler for HF/Google)",
  )
  parser.add_argument("--max-length", type=int, default=None)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument(
    "--save-hf",
    metavar="DIR",
    help="write the fine-tuned model as a HuggingFace BertFor<Task> folder to DIR and exit (no input)",
  )
  parser.add_argument("input", nargs="?", help="a text or JSON-lines file, or - for standard input")
  args = parser.parse_args(argv)
  if args.save_hf:
    try:
      out = Predictor.from_pretrained(args.model).save_pretrained(args.save_hf)
    except (OSError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"wrote {out}", file=sys.stderr)
    return 0
  if args.input is None:
    parser.error("give an input file (or - for standard input), or --save-hf DIR")

  from bert_jax.pretrained import from_pretrained

  predictor = bert = None
  try:
    try:
      predictor = Predictor.from_pretrained(args.model)
    except NoTaskHead:
      bert = from_pretrained(args.model, pooling=args.pooling)  # a bare encoder: embeddings
    stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  source = "<stdin>" if args.input == "-" else args.input
  try:
    with stream:
      for chunk in _chunks(read_examples(stream, source), 8 * args.batch_size):
        lines = (
          _task_lines(predictor, chunk, source, args.batch_size)
          if predictor is not None
          else _embedding_lines(bert, chunk, source, args.max_length, args.batch_size)
        )
        for record in lines:
          sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
  except UnicodeDecodeError as e:
    print(f"error: {source}: not UTF-8 text ({e})", file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
