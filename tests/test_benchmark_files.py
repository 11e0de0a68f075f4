"""The benchmarks' own files (config.data.task_dir): GLUE's TSV folders read as the reference reads them and giving
the rows, labels and evaluation-set names the TFDS datasets give; SQuAD JSON, CoNLL-2003 and SWAG found under their
published names; TFRecord copies of TFDS data; GLUE test submissions from a model and a test file; and the errors
for folders, files and rows that are not what a layout expects."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os

import numpy as np
import pytest

from bert_jax.data import benchmark_files, finetune_data
from bert_jax.data.task_rows import TaskDataError
from configs import finetune as finetune_configs

tfds = pytest.importorskip("tensorflow_datasets")

# Tiny copies of the files the GLUE download script writes: the same folder and file names, header lines and
# columns as the real ones (CoLA's train/dev have no header; MRPC's begin with a byte-order mark; MNLI's dev files
# carry five annotator labels before gold_label; test files have no label column). Several sentences open with a
# quote they never close, as MNLI and QQP sentences do.
_MNLI_HEAD = (
  "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
  "sentence2_parse\tsentence1\tsentence2"
)
_STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"


def _mnli_row(i, s1, s2, labels=()):
  parse1, parse2 = f"( {s1} )", f"( {s2} )"
  return "\t".join(
    [
      str(i),
      f"{1000 + i}",
      f"{1000 + i}e",
      "fiction",
      parse1,
      parse2,
      f"(ROOT {parse1})",
      f"(ROOT {parse2})",
      s1,
      s2,
      *labels,
    ]
  )


GLUE_FILES = {
  "CoLA/train.tsv": "gj04\t1\t\tThe ship sailed past the rocks.\ngj04\t0\t*\tThe more does he eat, the fatter.\n"
  "bc01\t1\t\tShe said \"maybe so.\n",
  "CoLA/dev.tsv": "cj99\t0\t*\tHim left early.\ncj99\t1\t\tThe dog barked all night.\n",
  "CoLA/test.tsv": "index\tsentence\n0\tBill walked past the house.\n1\tThe car honked down the road.\n",
  "SST-2/train.tsv": "sentence\tlabel\na gentle , moving film \t1\ndull and tired \t0\n\"witty at moments \t1\n",
  "SST-2/dev.tsv": "sentence\tlabel\nsharp and funny \t1\nnothing works here \t0\n",
  "SST-2/test.tsv": "index\tsentence\n0\ta quiet triumph .\n1\ttoo long by half .\n",
  "MRPC/train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
  "1\t702876\t702977\tHe called it \" a turning point .\tHe said it was \" a turning point .\n"
  "0\t2108705\t2108831\tShares rose 5 percent .\tThe firm hired a new chief .\n",
  "MRPC/dev.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t11\t12\tIt rained .\tRain fell .\n"
  "0\t13\t14\tIt rained .\tThe sun shone .\n",
  "MRPC/test.tsv": "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1089874\t1089925\tPrices fell .\tPrices dropped .\n",
  "QQP/train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
  "0\t1\t2\t\"Why do cats purr?\tWhat makes a cat purr?\t1\n3\t4\t5\tHow tall is Everest?\tIs \"Dune worth reading?\t0\n",
  "QQP/dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t8\t9\tWhat is rain?\tHow does rain form?\t0\n"
  "10\t11\t12\tHow do I cook rice?\tWhat is the best way to cook rice?\t1\n",
  "QQP/test.tsv": "id\tquestion1\tquestion2\n0\tWhat is snow?\tHow does snow form?\n1\tWho won?\t\"Who lost?\n",
  "STS-B/train.tsv": f"{_STSB_HEAD}\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\t"
  "An air plane is taking off.\t5.000\n1\tmain-news\theadlines\t2015\t0002\tnone\tnone\tA man sings.\tA dog runs.\t0.250\n",
  "STS-B/dev.tsv": f"{_STSB_HEAD}\tscore\n0\tmain-forums\tdeft\t2014\t0003\tnone\tnone\tA cat eats.\tA cat is eating.\t"
  "4.800\n",
  "STS-B/test.tsv": f"{_STSB_HEAD}\n0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA girl reads.\tA girl sings.\n",
  "MNLI/train.tsv": f"{_MNLI_HEAD}\tlabel1\tgold_label\n"
  + "\n".join(
    [
      _mnli_row(0, "\"Yeah, I know, he said.", "He said nothing.", ["contradiction", "contradiction"]),
      _mnli_row(1, "The trail is steep.", "The trail climbs.", ["entailment", "entailment"]),
      _mnli_row(2, "She bought a hat.", "The hat was red.", ["neutral", "neutral"]),
    ]
  )
  + "\n",
  "MNLI/dev_matched.tsv": f"{_MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
  + _mnli_row(0, "The shop opens at nine.", "The shop is open.", ["neutral"] * 5 + ["neutral"])
  + "\n"
  + _mnli_row(1, "He left \"early.", "He stayed late.", ["contradiction"] * 5 + ["contradiction"])
  + "\n",
  "MNLI/dev_mismatched.tsv": f"{_MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
  + _mnli_row(0, "Taxes rose.", "Taxes went up.", ["entailment"] * 5 + ["entailment"])
  + "\n",
  "MNLI/test_matched.tsv": f"{_MNLI_HEAD}\n"
  + _mnli_row(0, "It snowed.", "It was cold.")
  + "\n"
  + _mnli_row(1, "\"No way, she said.", "She agreed.")
  + "\n",
  "MNLI/test_mismatched.tsv": f"{_MNLI_HEAD}\n" + _mnli_row(0, "Rents fell.", "Rents rose.") + "\n",
  "QNLI/train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhen did it open?\tIt opened in 1901.\tentailment\n"
  "1\tWho built it?\tIt is made of stone.\tnot_entailment\n",
  "QNLI/dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhere is it?\tIt is in Paris.\tentailment\n",
  "QNLI/test.tsv": "index\tquestion\tsentence\n0\tWhat is it?\tIt is a bridge.\n",
  "RTE/train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA man bought a car.\tA car was bought.\tentailment\n"
  "1\tThe vote failed.\tThe bill passed.\tnot_entailment\n",
  "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tIt rained in Rome.\tRome had rain.\tentailment\n",
  "RTE/test.tsv": "index\tsentence1\tsentence2\n0\tThe team won.\tThe team lost.\n",
  "WNLI/train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI poured water into the cup until it was full.\t"
  "The cup was full.\t1\n1\tThe trophy did not fit in the case because it was big.\tThe case was big.\t0\n",
  "WNLI/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tJohn thanked Bill because he helped.\tBill helped.\t1\n",
  "WNLI/test.tsv": "index\tsentence1\tsentence2\n0\tThe fish ate the worm because it was hungry.\tThe fish was hungry.\n",
  "diagnostic/diagnostic.tsv": "index\tsentence1\tsentence2\n0\tThe cat sat.\tThe cat did not sit.\n",
}


def write_glue(root) -> str:
  for name, text in GLUE_FILES.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
      f.write(text)
  return str(root)


# The reference's readers, by position (google-research/bert run_classifier.py and transformers' glue processors):
# a line is split at tabs; the first line is a header except in CoLA's train/dev; (text, pair, label) columns.
REFERENCE = {
  "cola": ((3, None, 1), (1, None)),
  "sst2": ((0, None, 1), (1, None)),
  "mrpc": ((3, 4, 0), (3, 4)),
  "qqp": ((3, 4, 5), (1, 2)),
  "stsb": ((7, 8, -1), (7, 8)),
  "mnli": ((8, 9, -1), (8, 9)),
  "qnli": ((1, 2, -1), (1, 2)),
  "rte": ((1, 2, -1), (1, 2)),
  "wnli": ((1, 2, -1), (1, 2)),
  "ax": (None, (1, 2)),
}


def _reference_rows(path, task, split):
  with open(path, encoding="utf-8-sig") as f:
    lines = [line.rstrip("\n").split("\t") for line in f]
  labelled = not split.startswith("test")
  if not (task == "cola" and labelled):
    lines = lines[1:]
  text, pair, *label = REFERENCE[task][0 if labelled else 1]
  return [
    (line[text], None if pair is None else line[pair], line[label[0]] if label else None) for line in lines
  ]


def _tfds_glue(task, tmp_path):
  importlib.import_module("tensorflow_datasets.text.glue")
  return tfds.builder(f"glue/{task}", data_dir=tmp_path).info.features


@pytest.mark.parametrize("task", sorted(benchmark_files.GLUE))
def test_glue_files_read_as_the_reference_with_tfds_fields_and_label_names(task, tmp_path):
  root = write_glue(tmp_path / "glue_data")
  features = _tfds_glue(task, tmp_path)
  layout = benchmark_files.GLUE[task]
  fields = list(layout.fields)
  assert set(fields) == set(features) - {"label", "idx"}  # TFDS's own field names
  names = getattr(features["label"], "names", None)
  if layout.label_names is not None:
    assert sorted(layout.names()) == sorted(names)
  for split in layout.files:
    paths = benchmark_files.task_files(task, root, {"split": [split]})
    rows = benchmark_files.read_glue(paths[split], task, split)
    want = _reference_rows(paths[split], task, split)
    assert [(r[fields[0]], r[fields[1]] if len(fields) > 1 else None) for _, r in rows] == [
      w[:2] for w in want
    ]
    for (_, row), (_, _, raw) in zip(rows, want):
      if raw is None:
        assert row["label"] == -1
      elif names is None:  # STS-B: the score
        assert float(row["label"]) == float(raw)
      else:  # as TFDS's builder maps a file value: a name, or an index into its ClassLabel names
        assert row["label"] == (raw if raw in names else names[int(raw)])
  # The file's own bytes hold a quote that would open a quoted field: csv's default dialect would merge lines.
  if task in ("mnli", "qqp"):
    text = (tmp_path / "glue_data" / layout.folder / "train.tsv").read_text(encoding="utf-8")
    assert len(list(csv.reader(io.StringIO(text), delimiter="\t"))) < len(text.splitlines())
    assert len(benchmark_files.read_glue(os.path.join(root, layout.folder, "train.tsv"), task, "train")) == (
      len(text.splitlines()) - 1
    )


def _tokenizer(minilm_dir):
  from bert_jax.tokenization import Tokenizer

  return Tokenizer.from_pretrained(minilm_dir)


@pytest.mark.parametrize("task", ["sst2", "mnli"])
def test_files_and_tfds_give_the_same_labels_eval_sets_and_features(task, tmp_path, minilm_dir):
  """The same examples as a TFDS dataset (the builder's ClassLabel order) and as GLUE files: the model gets the
  same label names in the same id order, the same evaluation-set names (so the same metric keys) and the same
  features."""
  from bert_jax.data import records

  root = write_glue(tmp_path / "glue_data")
  features = _tfds_glue(task, tmp_path / "builder")
  layout, names = benchmark_files.GLUE[task], features["label"].names
  tfds_features = {f: tfds.features.Text() for f in layout.fields} | {
    "label": tfds.features.ClassLabel(names=names)
  }
  config = finetune_configs.get_config(f"task={task}")
  splits = {}
  for split in [config.data.train_split, *config.data.eval_splits.split(",")]:
    path = os.path.join(root, layout.folder, layout.files[split])
    rows = [
      {**{f: r[f] for f in layout.fields}, "label": names.index(r["label"])}
      for _, r in benchmark_files.read_glue(path, task, split)
    ]
    splits[split] = lambda rows=rows: iter(rows)
  records.write_array_record_dataset(tmp_path / "tfds", f"tiny_{task}", tfds_features, splits)
  tok = _tokenizer(minilm_dir)
  with config.unlocked():
    config.data.tfds_name, config.data.tfds_data_dir = f"tiny_{task}", str(tmp_path / "tfds")
  from_tfds = finetune_data.load_task_data(config, tok)
  with config.unlocked():
    config.data.task_dir = root  # tfds_name stays set: task_dir wins
  from_files = finetune_data.load_task_data(config, tok)
  assert from_files.labels == from_tfds.labels
  assert (
    [e.name for e in from_files.evals]
    == [e.name for e in from_tfds.evals]
    == config.data.eval_splits.split(",")
  )
  for key in from_tfds.train:
    np.testing.assert_array_equal(from_files.train[key], from_tfds.train[key])
  for a, b in zip(from_files.evals, from_tfds.evals):
    np.testing.assert_array_equal(a.features["labels"], b.features["labels"])
  if task == "mnli":
    assert from_files.labels == ["contradiction", "entailment", "neutral"]
    assert from_files.train["labels"].tolist() == [0, 1, 2]
  # The task's folder itself works as well as the GLUE root.
  with config.unlocked():
    config.data.task_dir = os.path.join(root, layout.folder)
  assert finetune_data.load_task_data(config, tok).labels == from_tfds.labels


CONLL = (
  "-DOCSTART- -X- -X- O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n\n"
  "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n\n"
)


def test_squad_conll_and_swag_files_under_their_published_names(tmp_path, minilm_dir):
  tok = _tokenizer(minilm_dir)
  # CoNLL-2003: the original names, IOB1 converted; evaluation sets named as TFDS's splits (dev, test).
  for names in (("eng.train", "eng.testa", "eng.testb"), ("train.txt", "valid.txt", "test.txt")):
    folder = tmp_path / names[0]
    folder.mkdir()
    for name in names:
      (folder / name).write_text(CONLL)
    config = finetune_configs.get_config("task=conll2003")
    with config.unlocked():
      config.data.task_dir = str(folder)
    data = finetune_data.load_task_data(config, tok)
    assert [e.name for e in data.evals] == ["dev", "test"]
    assert data.evals[0].examples[0].tags == ["B-ORG", "O", "B-MISC"]  # IOB1 -> IOB2
    assert data.evals[0].examples[0].document == 0  # -DOCSTART- kept: document context works
  # SQuAD v1.1.
  squad = {
    "version": "1.1",
    "data": [
      {
        "title": "T",
        "paragraphs": [
          {
            "context": "The river is long.",
            "qas": [
              {"id": "q1", "question": "What is long?", "answers": [{"text": "The river", "answer_start": 0}]}
            ],
          }
        ],
      }
    ],
  }
  for name in ("train-v1.1.json", "dev-v1.1.json"):
    (tmp_path / name).write_text(json.dumps(squad))
  config = finetune_configs.get_config("task=squad1")
  with config.unlocked():
    config.data.task_dir = str(tmp_path)
  data = finetune_data.load_task_data(config, tok)
  assert [e.name for e in data.evals] == ["validation"] and data.evals[0].examples[0].qid == "q1"
  # SWAG: its CSVs, with the unnamed first column.
  swag = (
    ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
    '0,lsmdc1,17,"She opens it. He",She opens it.,He,gold,"smiles, ""yes"".",runs.,falls.,sits.,0\n'
  )
  for name in ("train.csv", "val.csv"):
    (tmp_path / name).write_text(swag)
  config = finetune_configs.get_config("task=swag")
  with config.unlocked():
    config.data.task_dir = str(tmp_path)
  data = finetune_data.load_task_data(config, tok)
  assert [e.name for e in data.evals] == ["validation"] and data.evals[0].examples[0].label == 0


def test_bad_folders_files_and_rows_name_what_was_expected(tmp_path):
  root = write_glue(tmp_path / "glue_data")
  os.rename(os.path.join(root, "MRPC"), os.path.join(root, "mrpc_old"))
  with pytest.raises(FileNotFoundError) as err:
    benchmark_files.task_files("mrpc", root, {"config.data.train_split": ["train"]})
  message = str(err.value)
  assert os.path.join(root, "MRPC", "train.tsv") in message and "'mrpc_old'" in message and "'QQP'" in message
  os.remove(os.path.join(root, "RTE", "dev.tsv"))
  with pytest.raises(FileNotFoundError) as err:
    benchmark_files.task_files("rte", root, {"config.data.eval_splits": ["validation"]})
  message = str(err.value)
  assert "config.data.eval_splits='validation'" in message and os.path.join(root, "RTE", "dev.tsv") in message
  assert "['test.tsv', 'train.tsv']" in message
  with pytest.raises(
    TaskDataError, match=r"eval_splits='validation'.*no split 'validation'.*'validation_matched'"
  ):
    benchmark_files.task_files("mnli", root, {"config.data.eval_splits": ["validation"]})
  # A row with a field too few: the file, its line, the count found and the count expected.
  path = os.path.join(root, "QNLI", "dev.tsv")
  with open(path, "a", encoding="utf-8") as f:
    f.write("1\tWho?\tnot_entailment\n")
  with pytest.raises(TaskDataError, match=rf"{path} line 3: 3 tab-separated fields; expected 4"):
    benchmark_files.read_glue(path, "qnli", "validation")
  cola = os.path.join(root, "CoLA", "train.tsv")
  with open(cola, "a", encoding="utf-8") as f:
    f.write("gj04\t1\tA sentence without the mark column.\n")
  with pytest.raises(TaskDataError, match=rf"{cola} line 4: 3 tab-separated fields; expected 4"):
    benchmark_files.read_glue(cola, "cola", "train")
  # A dev file given as a test file (or the reverse) lacks the layout's columns.
  with pytest.raises(TaskDataError, match=r"lacks the columns \['label'\]"):
    benchmark_files.read_glue(os.path.join(root, "RTE", "test.tsv"), "rte", "train")
  # A label outside the layout names the file and line.
  config = finetune_configs.get_config("task=sst2")
  sst2 = os.path.join(root, "SST-2", "train.tsv")
  with open(sst2, "a", encoding="utf-8") as f:
    f.write("an odd one \t2\n")
  with config.unlocked():
    config.data.task_dir = root
  with pytest.raises(
    TaskDataError, match=rf"{sst2} line 5 field 'label': label '2' is not one of the labels"
  ):
    finetune_data.load_task_data(config, None)
  # A task with no file layout names the ones that have one.
  config = finetune_configs.get_config("task=pair")
  with config.unlocked():
    config.data.task_dir = root
  with pytest.raises(
    TaskDataError, match=r"task 'pair' has no known file layout; the tasks with one are \[.*'mnli'"
  ):
    finetune_data.load_task_data(config, None)
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    benchmark_files.task_files("rte", tmp_path / "nowhere", {"s": ["train"]})


def test_tfrecord_copy_without_tensorflow_says_how_to_convert(tmp_path):
  """A TFDS folder whose dataset_info says tfrecord: without TensorFlow the error names the dataset, its folder
  and TFDS's conversion command."""
  import importlib.util

  from bert_jax.data import records, task_rows

  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed: the TFRecord copy is read, not refused")
  folder = records.write_array_record_dataset(
    tmp_path,
    "tiny_tfrecord",
    {"sentence": tfds.features.Text()},
    {"train": lambda: iter([{"sentence": "a"}])},
  )
  info_path = os.path.join(folder, "dataset_info.json")
  with open(info_path) as f:
    info = json.load(f)
  info["fileFormat"] = "tfrecord"
  with open(info_path, "w") as f:
    json.dump(info, f)
  for name in os.listdir(folder):
    if ".array_record-" in name:
      os.rename(
        os.path.join(folder, name), os.path.join(folder, name.replace(".array_record-", ".tfrecord-"))
      )
  with pytest.raises(FileNotFoundError) as err:
    task_rows.tfds_rows("tiny_tfrecord", "train", tmp_path)
  message = str(err.value)
  assert "'tiny_tfrecord'" in message and f" in {folder} is stored as TFRecord" in message
  assert f"tfds convert_format --dataset_version_dir={folder} --out_file_format=array_record" in message
  assert "pip install 'bert_jax[tf]'" in message
