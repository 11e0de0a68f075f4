"""The paper configs name what their data sources define: every TFDS task in configs/finetune.py asks only for
splits its builder (the pinned tensorflow-datasets' own builder code) generates, and a split a prepared
dataset lacks stops the run at start-up naming the field and the splits it has."""

from __future__ import annotations

import importlib
import pathlib
from unittest import mock

import numpy as np
import pytest

from configs import finetune as finetune_configs

tfds = pytest.importorskip("tensorflow_datasets")

# Where the pinned tensorflow-datasets keeps each builder's code (importing it registers the builder; without
# TensorFlow, `import tensorflow_datasets` alone does not register the text builders).
BUILDER_MODULES = {
  "glue": "tensorflow_datasets.text.glue",
  "squad": "tensorflow_datasets.question_answering.squad",
  "conll2003": "tensorflow_datasets.text.conll2003.conll2003",
}


def builder_splits(name: str, tmp_path) -> list[str]:
  """The split names TFDS's builder `name` generates, read from its _split_generators with downloads faked
  (the generators are lazy: nothing is fetched or read)."""
  importlib.import_module(BUILDER_MODULES[name.split("/")[0]])
  builder = tfds.builder(name, data_dir=tmp_path)
  downloads = mock.MagicMock()
  fake = lambda urls: (
    {k: pathlib.Path(tmp_path) for k in urls} if isinstance(urls, dict) else pathlib.Path(tmp_path)
  )
  downloads.download_and_extract.side_effect = fake
  downloads.download.side_effect = fake
  generators = builder._split_generators(downloads)
  return sorted(generators) if isinstance(generators, dict) else sorted(str(g.name) for g in generators)


@pytest.mark.parametrize("task", sorted(t for t, v in finetune_configs.TASKS.items() if v.get("tfds")))
def test_every_tfds_task_names_splits_its_builder_defines(task, tmp_path):
  config = finetune_configs.get_config(f"task={task}")
  known = builder_splits(config.data.tfds_name, tmp_path)
  asked = [config.data.train_split, *config.data.eval_splits.split(",")]
  assert set(asked) <= set(known), f"{task}: {asked} vs the builder's {known}"


def test_a_split_the_prepared_dataset_lacks_names_the_field_and_the_choices(tmp_path):
  from bert_jax.data import records, tasks

  features = {"tokens": tfds.features.Sequence(tfds.features.Text()), "ner": tfds.features.Sequence(np.int32)}
  rows = lambda: iter([{"tokens": ["EU", "rejects"], "ner": [1, 0]}])
  records.write_array_record_dataset(tmp_path, "tiny_conll", features, {"train": rows, "dev": rows})
  tasks.check_tfds_splits("tiny_conll", tmp_path, {"config.data.eval_splits": ["dev"]})
  with pytest.raises(tasks.TaskDataError) as err:
    tasks.check_tfds_splits("tiny_conll", tmp_path, {"config.data.eval_splits": ["dev", "validation"]})
  assert "config.data.eval_splits='validation'" in str(err.value) and "['dev', 'train']" in str(err.value)
  # TFDS split expressions name splits too: slices and sums of the defined ones pass, others are named.
  tasks.check_tfds_splits("tiny_conll", tmp_path, {"config.data.train_split": ["train[:50%]", "train+dev"]})
  with pytest.raises(tasks.TaskDataError, match=r"train_split='train\+test\[:10\]'.* no split 'test'"):
    tasks.check_tfds_splits("tiny_conll", tmp_path, {"config.data.train_split": ["train+test[:10]"]})


# The reference's label ids per GLUE task, by meaning: google-research/bert run_classifier.py (MnliProcessor
# ["contradiction", "entailment", "neutral"]; MrpcProcessor and ColaProcessor ["0", "1"], 1 = equivalent /
# acceptable) and the GLUE data's own 0/1 columns (SST-2 1 = positive, QQP 1 = duplicate, WNLI 1 = entailment;
# QNLI and RTE name their labels, listed entailment first as transformers' glue processors do).
REFERENCE_LABELS = {
  "mnli": ["contradiction", "entailment", "neutral"],
  "mrpc": ["not_equivalent", "equivalent"],
  "cola": ["unacceptable", "acceptable"],
  "sst2": ["negative", "positive"],
  "qqp": ["not_duplicate", "duplicate"],
  "qnli": ["entailment", "not_entailment"],
  "rte": ["entailment", "not_entailment"],
  "wnli": ["not_entailment", "entailment"],
}


@pytest.mark.parametrize("task", sorted(REFERENCE_LABELS))
def test_glue_label_ids_follow_the_reference_whatever_tfds_orders(task, tmp_path):
  config = finetune_configs.get_config(f"task={task}")
  importlib.import_module(BUILDER_MODULES["glue"])
  tfds_names = tfds.builder(config.data.tfds_name, data_dir=tmp_path).info.features["label"].names
  ours = config.data.labels.split(",") if config.data.labels else tfds_names
  assert ours == REFERENCE_LABELS[task]
  assert sorted(tfds_names) == sorted(ours)


def test_tfds_label_ids_are_matched_by_name_into_the_task_order(tmp_path, minilm_dir):
  """A dataset with TFDS MNLI's ClassLabel order read by the mnli config: ids in the reference's order."""
  from bert_jax.data import finetune_data, records
  from bert_jax.tokenization import Tokenizer

  tfds_order = ["entailment", "neutral", "contradiction"]
  features = {
    "premise": tfds.features.Text(),
    "hypothesis": tfds.features.Text(),
    "label": tfds.features.ClassLabel(names=tfds_order),
  }
  pairs = [
    ("a man sleeps", "a man is awake", 2),
    ("a dog runs", "an animal moves", 0),
    ("it rains", "it is May", 1),
  ]
  rows = lambda: iter({"premise": p, "hypothesis": h, "label": y} for p, h, y in pairs)
  records.write_array_record_dataset(
    tmp_path,
    "tiny_mnli",
    features,
    {"train": rows, "validation_matched": rows, "validation_mismatched": rows},
  )
  config = finetune_configs.get_config("task=mnli")
  with config.unlocked():
    config.data.tfds_name, config.data.tfds_data_dir = "tiny_mnli", str(tmp_path)
  data = finetune_data.load_task_data(config, Tokenizer.from_pretrained(minilm_dir))
  assert data.labels == ["contradiction", "entailment", "neutral"]
  want = [data.labels.index(tfds_order[y]) for _, _, y in pairs]
  assert data.train["labels"].tolist() == want == [0, 1, 2]
  with config.unlocked():
    config.data.labels = "contradiction,entailment,unknown"
  with pytest.raises(ValueError, match="config.data.labels='contradiction,entailment,unknown'"):
    finetune_data.load_task_data(config, Tokenizer.from_pretrained(minilm_dir))


# --- NER with document context (the paper's CoNLL-2003 setup) -----------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
Thursday NNP B-NP O
"""


def test_read_conll_numbers_documents_at_docstart(tmp_path):
  from bert_jax.data import tasks

  path = tmp_path / "eng.train"
  path.write_text(CONLL)
  examples = tasks.read_conll(path)
  assert [(e.tokens[0], e.document) for e in examples] == [
    ("EU", 0),
    ("Peter", 0),
    ("BRUSSELS", 1),
    ("The", 1),
  ]
  path.write_text(CONLL.replace("-DOCSTART- -X- -X- O\n", ""))
  assert [e.document for e in tasks.read_conll(path)] == [None] * 4


@pytest.mark.parametrize("length", [8, 12, 16, 64])
def test_document_context_is_the_widest_window_of_the_document_around_the_sentence(
  tmp_path, minilm_dir, length
):
  """Properties, not a copy of the code: each row is [CLS] + a contiguous run of whole words of the document's
  piece stream that holds the whole sentence + [SEP]; it is full unless the document ran out; labels and
  word_index sit on the sentence's own first pieces only; decode_tags gives back the sentence's tags."""
  from bert_jax.data import tasks
  from bert_jax.tokenization import Tokenizer

  tok = Tokenizer.from_pretrained(minilm_dir)
  path = tmp_path / "eng.train"
  path.write_text(CONLL)
  examples = tasks.read_conll(path)
  tags = sorted({t for e in examples for t in e.tags}, key=lambda t: (t != "O", t))
  label_to_id = {t: i for i, t in enumerate(tags)}
  features = tasks.tagging_features(examples, tok, length, label_to_id, document_context=True)
  pieces = lambda word: tok([word], truncation=False, padding=False)["input_ids"][0][1:-1]
  for row, example in enumerate(examples):
    document = [e for e in examples if e.document == example.document]
    stream = [
      (i, w, p) for i, e in enumerate(document) for w, word in enumerate(e.tokens) for p in [pieces(word)]
    ]
    ids = features["input_ids"][row]
    sep = int(np.flatnonzero(ids == tok.sep_id)[-1])
    body = ids[1:sep].tolist()
    own = document.index(example)
    # the windows of whole words that hold the whole sentence
    first = min(k for k, (i, _, _) in enumerate(stream) if i == own)
    last = max(k for k, (i, _, _) in enumerate(stream) if i == own)
    windows = {
      (a, b): [t for _, _, p in stream[a : b + 1] for t in p]
      for a in range(first + 1)
      for b in range(last, len(stream))
    }
    fitting = {k: v for k, v in windows.items() if len(v) <= length - 2}
    sentence_pieces = [t for _, _, p in stream[first : last + 1] for t in p]
    if not fitting:  # the sentence alone is longer than the row: it is cut, with no context
      assert body == sentence_pieces[: len(body)]
      continue
    assert body in fitting.values()
    assert len(body) == max(len(v) for v in fitting.values())
    positions = np.flatnonzero(features["labels"][row] != tasks.IGNORE)
    assert [features["word_index"][row][p] for p in positions] == list(range(len(example.tokens)))
    assert [tags[features["labels"][row][p]] for p in positions] == example.tags
    assert set(np.flatnonzero(features["word_index"][row] >= 0)) == set(positions)
  decoded = tasks.decode_tags(
    np.where(features["labels"] >= 0, features["labels"], 0),
    features["word_index"],
    [len(e.tokens) for e in examples],
    tags,
  )
  if length >= 16:
    assert decoded == [e.tags for e in examples]


def test_document_context_without_documents_names_the_field(tmp_path, minilm_dir):
  from bert_jax.data import finetune_data
  from bert_jax.tokenization import Tokenizer

  rows = tmp_path / "train.jsonl"
  rows.write_text('{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}\n')
  config = finetune_configs.get_config("task=tagging")
  with config.unlocked():
    config.data.train = config.data.validation = str(rows)
    config.data.document_context = True
  with pytest.raises(
    ValueError, match="config.data.document_context=True but .*train.jsonl marks no documents"
  ):
    finetune_data.load_task_data(config, Tokenizer.from_pretrained(minilm_dir))
  assert finetune_configs.get_config("task=conll2003").data.document_context
  assert not finetune_configs.get_config("task=tagging").data.document_context


# --- GLUE submissions ------------------------------------------------------------------------------------------


def test_glue_submission_maps_labels_to_the_servers_values(tmp_path):
  from bert_jax import glue

  # MNLI: names as the server reads them, whichever order the model's ids had.
  glue.write_submission("mnli_matched", ["neutral", "contradiction", "entailment"], tmp_path / "MNLI-m.tsv")
  assert (
    tmp_path / "MNLI-m.tsv"
  ).read_text() == "index\tprediction\n0\tneutral\n1\tcontradiction\n2\tentailment\n"
  # Binary tasks: TFDS names or the GLUE files' 0/1, both to 0/1 (1 = the positive class).
  assert [glue.server_value("sst2", x) for x in ("positive", "negative", "1", "0")] == ["1", "0", "1", "0"]
  assert [glue.server_value("qnli", x) for x in ("entailment", "not_entailment")] == [
    "entailment",
    "not_entailment",
  ]
  assert glue.server_value("wnli", "not_entailment") == "0"
  assert glue.server_value("stsb", 3.14159265) == "3.14159"
  with pytest.raises(ValueError, match="'maybe' is none of the server's"):
    glue.server_value("rte", "maybe")
  # The CLI reads the predict CLI's JSON lines; WNLI's majority class as the paper submitted it.
  preds = tmp_path / "p.jsonl"
  preds.write_text('{"text": "a", "label": "duplicate"}\n{"text": "b", "label": "not_duplicate"}\n')
  assert glue.main(["--task", "qqp", "--predictions", str(preds), "--out", str(tmp_path / "QQP.tsv")]) == 0
  assert (tmp_path / "QQP.tsv").read_text().splitlines()[1:] == ["0\t1", "1\t0"]
  assert (
    glue.main(
      ["--task", "wnli", "--majority", "not_entailment", "--count", "3", "--out", str(tmp_path / "W.tsv")]
    )
    == 0
  )
  assert (tmp_path / "W.tsv").read_text().splitlines() == ["index\tprediction", "0\t0", "1\t0", "2\t0"]
  assert glue.main(["--task", "wnli", "--majority", "0", "--out", str(tmp_path / "X.tsv")]) == 2
