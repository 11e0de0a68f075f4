"""Paper tables (bert_jax/paper.py, paper_table.py): every table's commands parse as bert_jax.main parses them,
one task per data format runs end to end on a tiny model and small files in the benchmark's published layout
(GLUE TSV, SQuAD JSON, CoNLL-2003 columns, SWAG CSV: train -> select -> gather -> render, no numbers claimed),
and the gather shows missing, unfinished and differently configured runs as such, never averaged."""

from __future__ import annotations

import json
import os
import shlex
import shutil

import numpy as np
import pytest

from bert_jax import paper, paper_table
from bert_jax.sweep_spec import parse_run_config
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = sorted(
  n[:-3]
  for n in os.listdir(os.path.join(ROOT, "experiments", "paper"))
  if n.endswith(".py") and n != "references.py"
)
# Small enough for the tiny model (64 positions); 1 learning rate, 1 epoch: the grid's shape, not its size.
TINY = [
  "--config.learning_rates=0.003",
  "--config.epochs=1",
  "--config.batch_size=8",
  "--config.eval_batch_size=8",
  "--config.data.max_seq_length=32",
]
WORDS = [w for w in helpers.WORDS[:40]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("paper") / "model"
  path.mkdir()
  helpers.tiny_hf_folder(str(path), "BertModel")
  return str(path)


def _sentence(rng, n: int) -> str:
  return " ".join(rng.choice(WORDS, size=n))


# --- the benchmarks' files, as published ---------------------------------------------------------


def _glue_mrpc(folder, rng) -> None:
  """GLUE's MRPC/train.tsv and dev.tsv: Quality, #1 ID, #2 ID, #1 String, #2 String."""
  os.makedirs(os.path.join(folder, "MRPC"))
  for name, n in (("train.tsv", 32), ("dev.tsv", 16)):
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    lines += [f"{i % 2}\t{i}\t{i + 100}\t{_sentence(rng, 5)}\t{_sentence(rng, 4)}" for i in range(n)]
    with open(os.path.join(folder, "MRPC", name), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")


def _squad(folder, rng, version: str = "1.1") -> None:
  for name, n in ((f"train-v{version}.json", 24), (f"dev-v{version}.json", 8)):
    paragraphs = []
    for i in range(n):
      words = _sentence(rng, 10).split()
      k = i % 10
      start = len(" ".join(words[:k])) + (1 if k else 0)
      answers = [{"text": words[k], "answer_start": start}]
      qas = [{"id": f"{name}{i}", "question": _sentence(rng, 3), "answers": answers}]
      paragraphs.append({"context": " ".join(words), "qas": qas})
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
      json.dump({"version": version, "data": [{"title": "t", "paragraphs": paragraphs}]}, f)


def _conll(folder, rng) -> None:
  """eng.train / eng.testa / eng.testb: word POS chunk tag, IOB1 tags, -DOCSTART- between documents."""
  for name, docs in (("eng.train", 8), ("eng.testa", 3), ("eng.testb", 3)):
    lines = []
    for _ in range(docs):
      lines += ["-DOCSTART- -X- -X- O", ""]
      for _ in range(4):
        for word in _sentence(rng, 6).split():
          lines.append(f"{word} NN I-NP {'I-PER' if word in ('he', 'she') else 'O'}")
        lines.append("")
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")


def _swag(folder, rng) -> None:
  header = "video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label"
  for name, n in (("train.csv", 32), ("val.csv", 16)):
    rows = [header]
    for i in range(n):
      endings = ",".join(_sentence(rng, 3) for _ in range(4))
      rows.append(f"v{i},{i},x,{_sentence(rng, 4)},{_sentence(rng, 2)},gold,{endings},{i % 4}")
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
      f.write("\n".join(rows) + "\n")


# table, task, files writer, extra --config items
FORMATS = {
  "glue_tsv": ("bert_base_glue", "mrpc", _glue_mrpc, []),
  "squad_json": (
    "squad_v1",
    "squad1",
    _squad,
    ["--config.data.doc_stride=8", "--config.data.max_query_length=8"],
  ),
  "conll_columns": ("conll2003", "conll2003", _conll, []),
  "swag_csv": ("swag", "swag", _swag, []),
}


# --- every table: its commands -------------------------------------------------------------------


@pytest.mark.parametrize("name", TABLES)
def test_every_table_prints_one_parsed_command_per_task(name, model_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(ROOT)
  table = paper.load_table(name)
  argv = ["print", name, "--root", str(tmp_path / "out"), "--model", model_dir, "--any_model"]
  argv += ["--data", str(tmp_path / "data")] + (["--seeds", "2"] if table.takes_seeds else [])
  code = paper.main(argv)
  out, err = capsys.readouterr()
  if not os.path.exists(os.path.join(ROOT, table.sweep.runs[0].config.partition(":")[0])):
    # The MLPerf job's config (configs/mlm_eval.py) is another change's: until it is here, a clear refusal.
    assert code == 2 and "which this checkout does not have" in err
    return
  assert code == 0, err
  lines = [shlex.split(line) for line in out.splitlines()]
  assert [line[4].removeprefix("--workdir=") for line in lines] == [
    str(tmp_path / "out" / r.name) for r in table.sweep.runs
  ]
  for line, run in zip(lines, table.sweep.runs):
    assert line[:4] == ["python", "-m", "bert_jax.main", f"--config={run.config}"]
    assert f"--config.init_from={model_dir}" in line
    assert f"--config.{table.data_key}={tmp_path / 'data'}" in line
    if table.takes_seeds:
      assert "--config.seeds=0,1" in line
  assert "bert_jax.paper gather" in err
  # The folders the gather reads are the ones the fine-tuning grid writes: learning rates x seeds.
  for run in table.sweep.runs:
    if table.takes_seeds:
      expected = json.loads(
        parse_run_config(run, paper.job_args(table, _ns(model_dir, seeds=2), [])).to_json()
      )
      lrs = [f"{float(v):g}" for v in expected["learning_rates"].split(",") if v] or ["x"]
      folders = [os.path.basename(p) for _, _, p in paper_table.run_folders(expected, "T")]
      assert folders == [f"lr{lr}_seed{s}" for lr in lrs for s in (0, 1)] or lrs == ["x"]
      assert expected["selection"] == "paper"


def _ns(model, data=None, seeds=None):
  import argparse

  return argparse.Namespace(model=model, data=data, tfds=None, seeds=seeds)


def test_references_name_their_source_and_never_call_test_dev():
  for name in TABLES:
    table = paper.load_table(name)
    for rows in table.references.values():
      for row in rows:
        assert row["source"] and row["checked"] in ("search", "recalled"), row
  glue = paper.load_table("bert_base_glue").references["base"]
  # Table 1 is the GLUE server's test score: CoLA has no dev number in the paper, only test.
  cola = next(r for r in glue if r["run"] == "cola")
  assert cola["dev"] is None and cola["test"] == 52.1
  assert [r["run"] for r in glue if r["apart"]] == ["wnli"]


def test_a_model_of_another_architecture_is_refused_unless_asked(model_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(ROOT)
  code = paper.main(["print", "bert_base_glue", "--root", str(tmp_path), "--model", model_dir])
  assert code == 2
  assert "is L=2, H=32, A=4, I=64, not BERT-base (L=12, H=768, A=12, I=3072)" in capsys.readouterr().err
  # A BERT-large config (no weights needed to read its sizes) is the SQuAD v2.0 table's model, not BERT-base's.
  large = tmp_path / "large"
  large.mkdir()
  config = dict(helpers.tiny_hf_config().to_dict(), num_hidden_layers=24, hidden_size=1024)
  config.update(num_attention_heads=16, intermediate_size=4096)
  (large / "config.json").write_text(json.dumps(config))
  assert paper.check_model(paper.load_table("squad_v2"), str(large), False) == ("large", "")
  assert paper.check_model(paper.load_table("squad_v1"), str(large), False) == ("large", "")
  with pytest.raises(paper.PaperError, match="not BERT-base"):
    paper.check_model(paper.load_table("hf_flax_glue"), str(large), False)


# --- end to end, one task per data format --------------------------------------------------------


def _run_table(fmt, model_dir, tmp_path, monkeypatch):
  table, task, write, extra = FORMATS[fmt]
  data = tmp_path / "data"
  data.mkdir()
  write(str(data), np.random.default_rng(0))
  monkeypatch.chdir(ROOT)
  # One device per job: the smoke needs no sharding, and 8 simulated devices cost these 2 cores start-up time.
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  root = tmp_path / "out"
  argv = ["run", table, "--root", str(root), "--model", model_dir, "--any_model", "--data", str(data)]
  # GLUE: a grid of 2 seeds (mean ± std); the others: one run in the task's own folder (no grid).
  argv += ["--seeds", "2" if fmt == "glue_tsv" else "1", "--only", task, "--quiet", "--", *TINY, *extra]
  return root, argv, paper.main(argv)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_table_runs_end_to_end_on_each_data_format(fmt, model_dir, tmp_path, monkeypatch, capsys):
  root, argv, code = _run_table(fmt, model_dir, tmp_path, monkeypatch)
  out = capsys.readouterr().out
  assert code == 0, out[-3000:]
  gathered = json.loads((root / "table.json").read_text())
  task = FORMATS[fmt][1]
  seeds = (0, 1) if fmt == "glue_tsv" else (0,)
  assert gathered["runs"][task]["status"] == "ok"
  assert [r["status"] for r in gathered["runs"][task]["runs"]] == ["finished"] * len(seeds)
  rows = gathered["rows"]
  assert rows and all(r["run"] == task and r["status"] == "ok" and r["n"] == len(seeds) for r in rows)
  # The measured mean is the seeds' reported values, in the paper's units (recomputed here from result.json).
  for row in rows:
    values = []
    for seed in seeds:
      folder = root / task / f"lr0.003_seed{seed}" if len(seeds) > 1 else root / task
      result = json.loads((folder / "result.json").read_text())
      values.append(result["best"][row["metric"]] * row["scale"])
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["std"] == pytest.approx(np.std(values, ddof=1) if len(values) > 1 else 0.0)
    assert row["pick"] == pytest.approx(
      max(values) if row["metric"] == row["selection_metric"] else row["pick"]
    )
  md = (root / "table.md").read_text()
  assert "NOT the paper's model" in md and "## Sources" in md
  # Every setting the runs were given beyond the recipe is named in the table (the model's path is not one).
  assert "**Changed from the table's recipe**" in md and "`--config.epochs=1`" in md and "init_from" not in md
  assert f"`{task}`" in md
  if fmt == "glue_tsv":
    _check_test_submission(root, tmp_path)
    _check_gather_refuses_what_it_cannot_vouch_for(root, argv, capsys)


def _check_test_submission(root, tmp_path):
  """A run's export and GLUE's own test file give the server's file: one row per test row, in its order, with its
  index and the model's labels as the server's 0/1 (python -m bert_jax.glue --model --test)."""
  from bert_jax import glue
  from bert_jax.predictor import Predictor

  test = tmp_path / "MRPC_test.tsv"
  test.write_text(
    "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    + "".join(
      f"{i}\t{i}\t{i + 9}\t{a}\t{b}\n" for i, (a, b) in enumerate([("the day", "a day"), ("it is", "it")])
    ),
    encoding="utf-8",
  )
  export, out = str(root / "mrpc" / "lr0.003_seed0" / "export"), tmp_path / "MRPC.tsv"
  assert glue.main(["--task", "mrpc", "--model", export, "--test", str(test), "--out", str(out)]) == 0
  labels = [
    p["label"] for p in Predictor.from_pretrained(export).predict(["the day", "it is"], ["a day", "it"])
  ]
  server = {"not_equivalent": "0", "equivalent": "1"}
  assert out.read_text().splitlines() == ["index\tprediction"] + [
    f"{i}\t{server[x]}" for i, x in enumerate(labels)
  ]
  stsb = tmp_path / "STS-B_test.tsv"
  assert glue.main(["--task", "stsb", "--model", export, "--test", str(test), "--out", str(stsb)]) == 2


def _check_gather_refuses_what_it_cannot_vouch_for(root, argv, capsys):
  """The same table, gathered after its runs are disturbed: a run missing, one unfinished, one differently
  configured; each is shown as such, and the task gets no number."""
  gather = ["gather"] + argv[1:]
  gather.remove("--quiet")
  run0, run1 = root / "mrpc" / "lr0.003_seed0", root / "mrpc" / "lr0.003_seed1"
  saved = json.loads((run1 / "config.json").read_text())

  def mrpc():
    assert paper.main(gather) == 1
    capsys.readouterr()
    table = json.loads((root / "table.json").read_text())
    rows = [r for r in table["rows"] if r["run"] == "mrpc"]
    assert rows and not any("mean" in r for r in rows)
    return table["runs"]["mrpc"], (root / "table.md").read_text()

  (run1 / "result.json").unlink()  # stopped before its end: config.json and checkpoints, no result
  task, md = mrpc()
  assert (
    task["status"] == "incomplete"
    and "1 of 2 runs finished; unfinished: mrpc/lr0.003_seed1" in task["detail"]
  )
  assert "| incomplete |" in md
  shutil.rmtree(run1)
  task, _ = mrpc()
  assert "missing: mrpc/lr0.003_seed1" in task["detail"]
  (run1).mkdir()
  (run1 / "config.json").write_text(json.dumps(dict(saved, epochs=2)))
  shutil.copy(run0 / "result.json", run1 / "result.json")
  task, md = mrpc()
  assert task["status"] == "config mismatch"
  assert "lr0.003_seed1: epochs=2 (the table expects 1)" in task["detail"]
  # Runs of one task that read different files (another data folder) are not one row either.
  (run1 / "config.json").write_text(
    json.dumps(dict(saved, data=dict(saved["data"], task_dir="/elsewhere/glue")))
  )
  task, _ = mrpc()
  assert task["status"] == "config mismatch"
  assert (
    "the runs read different files: data.task_dir" in task["detail"] and "/elsewhere/glue" in task["detail"]
  )
  # Asked for another seed count than the runs had: the table says the runs are not that configuration.
  other = [a if a != "2" else "3" for a in gather]
  assert paper.main(other) == 1
  capsys.readouterr()
  task = json.loads((root / "table.json").read_text())["runs"]["mrpc"]
  assert task["status"] == "config mismatch" and "seeds='0,1' (the table expects '0,1,2')" in task["detail"]


def test_mlperf_table_runs_the_mlm_eval_job_and_gathers_its_accuracy(tmp_path, monkeypatch, capsys):
  """The MLPerf table on a tiny Google checkpoint and 4 records in create_pretraining_data.py's layout."""
  from tests.test_tf_checkpoint import FIXTURE
  from tests.test_tfrecord import serialize, write_records

  rng = np.random.default_rng(0)
  records = []
  for _ in range(4):
    ids = rng.integers(5, 120, 16)
    records.append(
      serialize(
        {
          "input_ids": ids,
          "input_mask": np.ones(16, np.int64),
          "segment_ids": np.zeros(16, np.int64),
          "masked_lm_positions": np.array([1, 3, 5, 0, 0]),
          "masked_lm_ids": np.array([ids[1], 7, 9, 0, 0]),
          "masked_lm_weights": np.array([1.0, 1.0, 1.0, 0.0, 0.0], np.float32),
          "next_sentence_labels": np.array([0]),
        }
      )
    )
  write_records(tmp_path / "eval_10k", records)
  monkeypatch.chdir(ROOT)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  root = tmp_path / "out"
  argv = [
    "run",
    "mlperf_bert",
    "--root",
    str(root),
    "--model",
    str(FIXTURE),
    "--data",
    str(tmp_path / "eval_10k"),
  ]
  assert paper.main(argv) == 2  # a 2-layer model is not MLPerf's BERT-large
  assert "not BERT-large" in capsys.readouterr().err
  assert paper.main([*argv, "--any_model", "--quiet"]) == 0, capsys.readouterr().out[-3000:]
  capsys.readouterr()
  row = json.loads((root / "table.json").read_text())["rows"][0]
  result = json.loads((root / "mlm_eval" / "result.json").read_text())
  assert row["status"] == "ok" and row["n"] == 1 and row["dev"] == 0.34085
  assert row["mean"] == pytest.approx(result["masked_lm_accuracy"])
  md = (root / "table.md").read_text()
  assert "0.720" in md and "| 0.34085 |" in md  # the reference as published, not rounded to 0.3408
  # The job records its configuration: a run of another one (fewer examples than eval_10k) is not the row.
  saved = json.loads((root / "mlm_eval" / "config.json").read_text())
  (root / "mlm_eval" / "config.json").write_text(json.dumps(dict(saved, max_examples=100)))
  assert paper.main(["gather", "mlperf_bert", "--root", str(root), "--any_model"]) == 1
  capsys.readouterr()
  task = json.loads((root / "table.json").read_text())["runs"]["mlm_eval"]
  assert (
    task["status"] == "config mismatch" and "max_examples=100 (the table expects 10000)" in task["detail"]
  )


def test_a_checkpoint_with_its_config_file_apart_is_sized_by_that_file(tmp_path, monkeypatch, capsys):
  """MLPerf's layout: tf1_ckpt/model.ckpt-28252.* with bert_config.json beside the folder, named to the job
  as config.model_config; the table's size check reads the same file."""
  monkeypatch.chdir(ROOT)
  ckpt = tmp_path / "tf1_ckpt"
  ckpt.mkdir()
  (ckpt / "model.ckpt-28252.index").write_bytes(b"")  # the sizes come from the config file alone
  config = dict(helpers.tiny_hf_config().to_dict(), num_hidden_layers=24, hidden_size=1024)
  config.update(num_attention_heads=16, intermediate_size=4096)
  (tmp_path / "bert_config.json").write_text(json.dumps(config))
  argv = ["print", "mlperf_bert", "--root", str(tmp_path / "out"), "--data", str(tmp_path / "eval_10k")]
  assert paper.main([*argv, "--model", str(ckpt)]) == 2
  assert "-- --config.model_config=PATH/bert_config.json" in capsys.readouterr().err
  given = f"--config.model_config={tmp_path / 'bert_config.json'}"
  for model in (ckpt, ckpt / "model.ckpt-28252"):  # the folder, or the checkpoint's prefix
    assert paper.main([*argv, "--model", str(model), "--", given]) == 0
    assert given in capsys.readouterr().out


def test_a_test_set_row_is_compared_with_the_papers_test_number():
  """CoNLL-2003's test F1 is measured on eng.testb, the paper's own test set: its gap is to the paper's test F1."""
  refs = paper.load_table("conll2003").references["base"]
  dev, test = (next(r for r in refs if r["metric"] == m) for m in ("f1", "test/f1"))
  per_lr = {"f1": {"mean": 0.95, "std": 0.01, "n": 5}, "test/f1": {"mean": 0.91, "std": 0.01, "n": 5}}
  task = {
    "status": "ok",
    "path": "T",
    "summary": {"5e-05": per_lr},
    "best_lr": "5e-05",
    "selection_metric": "f1",
  }
  assert paper_table._row(dev, task)["gap"] == pytest.approx(95.0 - 96.4)
  assert paper_table._row(test, task)["gap"] == pytest.approx(91.0 - 92.4)
  # GLUE's test numbers are the server's: a dev measurement is never compared with them.
  mnli_mm = next(
    r for r in paper.load_table("bert_base_glue").references["base"] if r["name"] == "MNLI-mm acc"
  )
  per_lr = {"validation_mismatched/accuracy": {"mean": 0.84, "std": 0.0, "n": 5}}
  task = dict(task, summary={"5e-05": per_lr}, selection_metric="accuracy")
  assert "gap" not in paper_table._row(mnli_mm, task)
