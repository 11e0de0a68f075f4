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
