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

CLI, JSON lines in and out (a plain line is {"text": line}), one output line per input line:

    python -m bert_jax.predict --model DIR FILE|-   [--blank empty: a blank line answers {"empty": true}]
    python -m bert_jax.predict --model DIR --save-hf OUT   # as a HuggingFace BertFor<Task> folder

  classification / regression / tagging: {"text": ..., "pair": ...}
  span QA:                               {"question": ..., "context": ...}
  multiple choice:                       {"context": ..., "endings": [...]}
A pretrained encoder without a task head answers with its pooled embedding ({"embedding": [...]}).
"""

# This module is the command line; the Predictor is predictor.py's, model folders predict_folders.py's and
# output decoding predict_outputs.py's. Their public names are importable from here, as they always were.

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator

from bert_jax.predict_folders import (  # noqa: F401
  HF_ARCHITECTURES,
  HF_FOR_KIND,
  NoTaskHead,
  PredictorError,
  save_task_model,
)
from bert_jax.predict_outputs import bio_entities, words_from_pieces  # noqa: F401
from bert_jax.predictor import Predictor

# --- reading and writing JSON lines --------------------------------------------------------------


BLANK = ("error", "empty")


def read_examples(lines: Iterable[str], source: str, blank: str = "error") -> Iterator[dict]:
  """One record per line, in order. A blank or whitespace-only line is an error naming it (blank="error"), or a
  record {"_blank": True} that answers with {"empty": true} (blank="empty"): output line i always answers input
  line i, which callers that align by line number (a GLUE test submission) rely on."""
  if blank not in BLANK:
    raise ValueError(f"blank={blank!r}; expected one of {BLANK}")
  for number, line in enumerate(lines, 1):
    line = line.rstrip("\n").rstrip("\r")
    if not line.strip():
      if blank == "error":
        raise ValueError(
          f"{source}:{number}: blank line; every line is one example and gets one output line. Remove it, "
          'or pass --blank empty to answer it with {"empty": true}'
        )
      yield {"_line": number, "_blank": True}
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
    outputs = _predictions(predictor, chunk, source, batch_size)
  for record, output in zip(chunk, outputs):
    yield {**{k: v for k, v in record.items() if k != "_line"}, **output}


def _predictions(predictor: Predictor, chunk, source, batch_size) -> list[dict]:
  """predict() for each line of a chunk, in order; lines with and without a "pair" may mix."""
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
  return outputs


# --- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
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
  parser.add_argument(
    "--blank",
    choices=BLANK,
    default="error",
    help="a blank input line: stop with an error naming it (default), or answer it with {\"empty\": true}; "
    "either way output line i answers input line i",
  )
  parser.add_argument("input", nargs="?", help="a text or JSON-lines file, or - for standard input")
  return parser


def _save_hf(args: argparse.Namespace) -> int:
  try:
    out = Predictor.from_pretrained(args.model).save_pretrained(args.save_hf)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}", file=sys.stderr)
  return 0


def _load_model(args: argparse.Namespace):
  """(predictor, None) for a fine-tuned model, else (None, the bare encoder) to answer with embeddings."""
  from bert_jax.pretrained import from_pretrained

  try:
    return Predictor.from_pretrained(args.model), None
  except NoTaskHead:
    return None, from_pretrained(args.model, pooling=args.pooling)


def _open_input(path: str):
  """The input: standard input for "-", else the file (the caller closes either)."""
  return sys.stdin if path == "-" else open(path, encoding="utf-8")


def _answer_lines(args: argparse.Namespace, predictor, bert, stream, source: str) -> None:
  """Writes one JSON line per input line to standard output."""
  for chunk in _chunks(read_examples(stream, source, args.blank), 8 * args.batch_size):
    examples = [r for r in chunk if not r.get("_blank")]
    answers = iter(
      (
        _task_lines(predictor, examples, source, args.batch_size)
        if predictor is not None
        else _embedding_lines(bert, examples, source, args.max_length, args.batch_size)
      )
      if examples
      else ()
    )
    for record in chunk:
      out = {"empty": True} if record.get("_blank") else next(answers)
      sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.save_hf:
    return _save_hf(args)
  if args.input is None:
    parser.error("give an input file (or - for standard input), or --save-hf DIR")
  try:
    predictor, bert = _load_model(args)
    stream = _open_input(args.input)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  source = "<stdin>" if args.input == "-" else args.input
  try:
    with stream:
      _answer_lines(args, predictor, bert, stream, source)
  except UnicodeDecodeError as e:
    print(f"error: {source}: not UTF-8 text ({e})", file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
