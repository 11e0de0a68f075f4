"""The Predictor and its CLI on fine-tuned models: answers in the task's own terms, checked against
transformers running the same weights and against independent decoders (seqeval's entity reader,
a brute-force span search)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bert_jax import batching, convert, predict
from bert_jax.predict import Predictor, PredictorError, bio_entities, words_from_pieces
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _cli(args, stdin=None):
  return subprocess.run(
    [sys.executable, "-m", "bert_jax.predict", *args],
    input=stdin,
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
  )


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("classifier")
  model = helpers.tiny_hf_folder(
    str(path), "BertForSequenceClassification", num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}
  )
  return str(path), model


def _torch_logits(model, tokenizer, texts, pairs=None):
  enc = tokenizer(texts, pairs, max_length=64)
  with torch.no_grad():
    return model(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()


def test_classification_labels_and_probabilities(classifier_dir):
  path, model = classifier_dir
  predictor = Predictor.from_pretrained(path)
  texts = ["the day is long.", "what a way to go!", "he had some time, and then some more"]
  out = predictor.predict(texts)
  want = _torch_logits(model, predictor.tokenizer, texts)
  for row, logits in zip(out, want):
    np.testing.assert_allclose(row["logits"], logits, atol=1e-5)
    assert row["label"] == ["neg", "neu", "pos"][int(logits.argmax())]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([row["probabilities"][k] for k in ("neg", "neu", "pos")], probs, atol=1e-5)
  single = predictor.predict("the day is long.")
  assert single["label"] == out[0]["label"]
  pair = predictor.predict(["the day"], ["is long"])[0]
  np.testing.assert_allclose(
    pair["logits"], _torch_logits(model, predictor.tokenizer, ["the day"], ["is long"])[0], atol=1e-5
  )


def test_batches_of_mixed_lengths_answer_each_text_as_alone(classifier_dir, tmp_path):
  """Rows run longest first in batches padded to their own length bucket (32, 64): every text's output must
  equal transformers on that text alone, unpadded, and come back in the input's order."""
  path, model = classifier_dir
  predictor = Predictor.from_pretrained(path)
  long_text = "the day of water was long and he had some time " * 2
  assert 32 < len(predictor.tokenizer.encode(long_text)["input_ids"]) <= 64  # the 64 bucket, not truncated
  texts = ["the day", long_text, "what a way to go!", "he had some time, and then some more", "long"]
  out = predictor.predict(texts, batch_size=2)  # batches of buckets 64, 32, 32
  for text, row in zip(texts, out):
    np.testing.assert_allclose(row["logits"], _torch_logits(model, predictor.tokenizer, [text])[0], atol=1e-5)
  helpers.tiny_hf_folder(
    str(tmp_path), "BertForTokenClassification", num_labels=5, id2label=dict(enumerate(NER_LABELS))
  )
  tagger = Predictor.from_pretrained(tmp_path)
  ref = helpers.tiny_hf_folder(
    str(tmp_path / "again"), "BertForTokenClassification", num_labels=5, id2label=dict(enumerate(NER_LABELS))
  )
  for text, row in zip(texts, tagger.predict(texts, batch_size=2)):
    enc = tagger.tokenizer.encode(text)
    with torch.no_grad():
      logits = ref(input_ids=torch.tensor([enc["input_ids"]])).logits.numpy()[0]
    firsts = [i for i, _, _ in words_from_pieces(enc["tokens"], enc["offsets"])]
    assert [w["tag"] for w in row["words"]] == [NER_LABELS[int(logits[i].argmax())] for i in firsts]


def test_run_by_length_keeps_order_and_compiles_few_shapes():
  """batching.run_by_length on a numpy forward: every row's outputs in its own place, its real tokens intact,
  batches of one row count and power-of-two lengths (32 at least, the width at most)."""
  rng = np.random.default_rng(0)
  n, width = 23, 200
  real = rng.integers(1, width + 1, n)
  mask = (np.arange(width)[None] < real[:, None]).astype(np.int32)
  ids = rng.integers(1, 1000, (n, width)).astype(np.int32) * mask
  seen = []

  def forward(input_ids, attention_mask, token_type_ids):
    seen.append(input_ids.shape)
    return {"tokens": input_ids * 2.0, "total": input_ids.sum(-1)}

  features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
  out = batching.run_by_length(features, 4, forward, ("tokens",), fill=-7.0)
  np.testing.assert_array_equal(out["total"], ids.sum(-1))
  for row in range(n):
    np.testing.assert_array_equal(out["tokens"][row, : real[row]], 2.0 * ids[row, : real[row]])
  assert out["tokens"].shape == (n, width) and (out["tokens"] == -7.0).any()  # shorter batches filled
  assert {rows for rows, _ in seen} == {4} and {length for _, length in seen} <= {32, 64, 128, width}
  assert [length for _, length in seen] == sorted((length for _, length in seen), reverse=True)


def test_cli_classifies_json_lines(classifier_dir):
  path, model = classifier_dir
  lines = ["the day is long.", "", json.dumps({"text": "the day", "pair": "is long", "id": 7}), " \t"]
  result = _cli(["--model", path, "--blank", "empty", "-"], stdin="\n".join(lines) + "\n")
  assert result.returncode == 0, result.stderr
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert len(records) == len(lines)  # output line i answers input line i, blank lines included
  assert records[0]["text"] == "the day is long." and records[2]["id"] == 7  # input fields come back
  assert records[1] == records[3] == {"empty": True}
  predictor = Predictor.from_pretrained(path)
  assert records[0]["label"] == predictor.predict("the day is long.")["label"]
  assert records[2]["label"] == predictor.predict(["the day"], ["is long"])[0]["label"]
  # By default a blank line stops the run, naming it, before anything is written for it.
  with pytest.raises(ValueError, match=r"in.txt:2: blank line; every line is one example"):
    list(predict.read_examples(["a\n", "  \n", "b\n"], "in.txt"))


def test_words_and_entities_keep_character_offsets(tmp_path):
  helpers.tiny_hf_folder(
    str(tmp_path), "BertForTokenClassification", num_labels=5, id2label=dict(enumerate(NER_LABELS))
  )
  predictor = Predictor.from_pretrained(tmp_path)
  text = "  He said:  the   day  of  water, it was long!"
  out = predictor.predict(text)
  enc = predictor.tokenizer.encode(text)
  words = [w for w in text.replace(":", " : ").replace(",", " , ").replace("!", " ! ").split()]
  assert [w["text"] for w in out["words"]] == words
  for w in out["words"]:
    assert text[w["start"] : w["end"]] == w["text"]
  # Each word's tag is the argmax at its first word piece, as transformers computes the logits.
  model = helpers.tiny_hf_folder(
    str(tmp_path / "again"), "BertForTokenClassification", num_labels=5, id2label=dict(enumerate(NER_LABELS))
  )
  with torch.no_grad():
    logits = model(input_ids=torch.tensor([enc["input_ids"]])).logits.numpy()[0]
  firsts = [i for i, _, _ in words_from_pieces(enc["tokens"], enc["offsets"])]
  assert [w["tag"] for w in out["words"]] == [NER_LABELS[int(logits[i].argmax())] for i in firsts]
  # Entities: seqeval's own chunk reader on the same tags gives the same chunks.
  from seqeval.metrics.sequence_labeling import get_entities

  tags = [w["tag"] for w in out["words"]]
  want = [(kind, a, b) for kind, a, b in get_entities(tags)]
  assert [(k, a, b) for k, a, b in bio_entities(tags)] == want
  for entity, (kind, a, b) in zip(out["entities"], want):
    assert entity["type"] == kind
    assert entity["start"] == out["words"][a]["start"] and entity["end"] == out["words"][b]["end"]
    assert entity["text"] == text[entity["start"] : entity["end"]]


@pytest.mark.parametrize(
  "tags, chunks",
  [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["I-PER", "I-PER", "B-PER", "I-LOC"], [("PER", 0, 1), ("PER", 2, 2), ("LOC", 3, 3)]),
    (["O", "O"], []),
    # IOBES: E- and S- close a chunk; an I- or E- after them opens one.
    (["B-PER", "E-PER", "S-PER", "I-PER", "E-PER"], [("PER", 0, 1), ("PER", 2, 2), ("PER", 3, 4)]),
    (
      ["S-LOC", "E-LOC", "B-ORG", "I-ORG", "E-LOC"],
      [("LOC", 0, 0), ("LOC", 1, 1), ("ORG", 2, 3), ("LOC", 4, 4)],
    ),
  ],
)
def test_bio_entities_hand_worked(tags, chunks):
  assert bio_entities(tags) == chunks


def test_bio_entities_read_chunks_as_seqeval_does():
  """Random IOB1, IOB2 and IOBES sequences, ill-formed ones included: the Predictor's entities are the chunks
  that seqeval (and so `metrics.entity_scores`) reads from the same tags."""
  from seqeval.metrics.sequence_labeling import get_entities

  rng = np.random.default_rng(0)
  tags = ["O"] + [f"{prefix}-{kind}" for prefix in "BIES" for kind in ("PER", "LOC")]
  for _ in range(2000):
    sequence = [tags[k] for k in rng.integers(0, len(tags), rng.integers(0, 12))]
    assert bio_entities(sequence) == [tuple(chunk) for chunk in get_entities(sequence)], sequence


def test_span_answer_is_the_best_valid_span_in_exact_context_characters(tmp_path):
  model = helpers.tiny_hf_folder(str(tmp_path), "BertForQuestionAnswering")
  predictor = Predictor.from_pretrained(tmp_path)
  question, context = "who had the time?", "  The  day  had some time,   and he was long with it."
  out = predictor.answer(question, context)
  assert out["answer"] == context[out["start"] : out["end"]] and not out["no_answer"]
  # Brute force over the single window: context tokens only, start <= end, at most 30 tokens.
  enc = predictor.tokenizer.encode(question, context)
  with torch.no_grad():
    ref = model(
      input_ids=torch.tensor([enc["input_ids"]]), token_type_ids=torch.tensor([enc["token_type_ids"]])
    )
  start, end = ref.start_logits.numpy()[0], ref.end_logits.numpy()[0]
  in_context = [
    i for i, (t, o) in enumerate(zip(enc["token_type_ids"], enc["offsets"])) if t == 1 and o[1] > o[0]
  ]
  best = max(((start[i] + end[j], i, j) for i in in_context for j in in_context if i <= j < i + 30))
  _, i, j = best
  assert (out["start"], out["end"]) == (enc["offsets"][i][0], enc["offsets"][j][1])
  np.testing.assert_allclose(out["score"], best[0], atol=1e-4)


def test_cli_span_and_errors(tmp_path):
  helpers.tiny_hf_folder(str(tmp_path), "BertForQuestionAnswering")
  line = json.dumps({"question": "who?", "context": "the day was long"})
  result = _cli(["--model", str(tmp_path), "-"], stdin=line + "\n")
  assert result.returncode == 0, result.stderr
  record = json.loads(result.stdout)
  assert record["answer"] == "the day was long"[record["start"] : record["end"]]
  result = _cli(["--model", str(tmp_path), "-"], stdin=line + "\n" + json.dumps({"question": "who?"}) + "\n")
  assert (
    result.returncode == 2
    and '<stdin>:2: expected a JSON object with a string "context" field' in result.stderr
  )


def test_predictor_refuses_wrong_calls(classifier_dir, minilm_dir):
  predictor = Predictor.from_pretrained(classifier_dir[0])
  with pytest.raises(ValueError, match=r"answer\(\) needs a span QA model; this one is classification"):
    predictor.answer("q", "c")
  with pytest.raises(ValueError, match="no task head"):
    Predictor.from_pretrained(minilm_dir)


@pytest.mark.parametrize(
  "architecture, overrides",
  [
    ("BertForSequenceClassification", dict(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})),
    ("BertForSequenceClassification", dict(num_labels=1, problem_type="regression")),
    ("BertForTokenClassification", dict(num_labels=5, id2label=dict(enumerate(NER_LABELS)))),
    ("BertForQuestionAnswering", {}),
    ("BertForMultipleChoice", {}),
  ],
)
def test_fine_tuned_model_saved_for_transformers_computes_the_original_logits(
  tmp_path, architecture, overrides
):
  """A fine-tuned model in bert_jax's export, saved with `save_pretrained` (the CLI's --save-hf): transformers
  loads it with no missing or unexpected weights, keeps its labels and task, and computes the logits of the
  original transformers model whose weights went HuggingFace -> bert_jax export -> HuggingFace (1e-5)."""
  import transformers

  from bert_jax.predict import save_task_model

  original = helpers.tiny_hf_folder(str(tmp_path / "hf"), architecture, seed=3, **overrides)
  first = Predictor.from_pretrained(tmp_path / "hf")
  params = {k: np.asarray(v) for k, v in convert.flatten(first.params).items()}
  save_task_model(
    str(tmp_path / "bert_jax"), first.config, convert.unflatten(params), first.tokenizer, first.task
  )
  predictor = Predictor.from_pretrained(tmp_path / "bert_jax")
  assert predictor.kind == first.kind
  if architecture == "BertForSequenceClassification" and predictor.kind == "classification":
    result = _cli(["--model", str(tmp_path / "bert_jax"), "--save-hf", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
  else:
    predictor.save_pretrained(tmp_path / "out")
  loaded, info = getattr(transformers, architecture).from_pretrained(
    tmp_path / "out", output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert loaded.config.architectures == [architecture]
  if "id2label" in overrides:
    assert loaded.config.id2label == overrides["id2label"]
  assert (loaded.config.problem_type == "regression") == ("problem_type" in overrides)
  batch = {k: torch.tensor(v) for k, v in helpers.random_batch(99, 4, 12, seed=5).items()}
  if architecture == "BertForMultipleChoice":
    batch = {k: v.reshape(2, 2, 12) for k, v in batch.items()}
  with torch.no_grad():
    want, got = original.eval()(**batch), loaded.eval()(**batch)
  for key in ("start_logits", "end_logits") if architecture == "BertForQuestionAnswering" else ("logits",):
    np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=1e-5)
  # And bert_jax reads its own HuggingFace folder back to the same parameters.
  again = Predictor.from_pretrained(tmp_path / "out")
  for key, value in convert.flatten(again.params).items():
    np.testing.assert_array_equal(np.asarray(value), params[key])


def test_saving_for_transformers_refuses_what_bert_cannot_compute(tmp_path):
  helpers.tiny_hf_folder(str(tmp_path / "hf"), "BertForSequenceClassification", num_labels=2)
  predictor = Predictor.from_pretrained(tmp_path / "hf")
  # transformers 5 writes no id2label for its default two labels: the classifier's rows count them.
  assert predictor.kind == "classification" and predictor.labels == ["LABEL_0", "LABEL_1"]
  predictor.config = predictor.config.replace(pooling="mean")
  with pytest.raises(PredictorError, match="pooling='mean'.*bert_jax's own export"):
    predictor.save_pretrained(tmp_path / "out")
  predictor.config = predictor.config.replace(pooling="cls", norm_position="pre")
  with pytest.raises(PredictorError, match="not a BERT architecture"):
    predictor.save_pretrained(tmp_path / "out")
  assert not (tmp_path / "out" / "model.safetensors").exists()
