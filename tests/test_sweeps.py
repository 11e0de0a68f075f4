"""Ablation sweeps (bert_jax/sweeps.py): sweep-file checks, printed launch commands, a real sweep of tiny
pretraining runs (one failing) with its report, rerun skips, SIGTERM hand-off, and the scaling table."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bert_jax import sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOK = os.path.join(ROOT, "data", "samples", "en_mobydick.txt")
CONFIG = "configs/pretrain.py:variant=tiny,objective=mlm,runlocal"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_sweep(path, body: str, config: str | None = CONFIG, common: dict | None = None) -> str:
  text = ""
  if config is not None:
    text += f"CONFIG = {config!r}\n"
  if common is not None:
    text += f"COMMON = {common!r}\n"
  path.write_text(text + textwrap.dedent(body))
  return str(path)


def entries(*runs: dict) -> str:
  return f"def get_sweep():\n  return {list(runs)!r}\n"


# --- sweep files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "config, body, message",
  [
    (None, entries({"name": "a"}), "CONFIG is missing"),
    (CONFIG, "X = 1\n", r"no get_sweep\(\) function"),
    (CONFIG, entries(), r"get_sweep\(\) returned \[\]"),
    (CONFIG, entries({"name": "a"}, "b"), r"get_sweep\(\)\[1\] is a str"),
    (CONFIG, entries({"name": "a"}, {"model.hidden_act": "gelu"}), r"get_sweep\(\)\[1\] .* has no 'name'"),
    (CONFIG, entries({"name": "a"}, {"name": "A"}), r"run 'A' \(get_sweep\(\)\[1\]\): the name repeats"),
    (CONFIG, entries({"name": "../up"}), r"run '../up' .*not filesystem-safe"),
    (CONFIG, entries({"name": "two words"}), r"run 'two words' .*not filesystem-safe"),
    (CONFIG, entries({"name": "report"}), "reserved"),
    (CONFIG, entries({"name": "a", "model hidden": 1}), "'model hidden' is not a dotted config path"),
    (CONFIG, "def get_sweep():\n  return [{'name': 'a', 'x': {1, 2}}]\n", r"run 'a' .*override x=\{1, 2\}"),
    (CONFIG, "def get_sweep():\n  raise KeyError('boom')\n", r"get_sweep\(\) raised KeyError"),
  ],
)
def test_load_sweep_errors_name_the_file_and_entry(tmp_path, config, body, message):
  path = write_sweep(tmp_path / "sweep.py", body, config=config)
  with pytest.raises(sweeps.SweepError, match=message) as error:
    sweeps.load_sweep(path)
  assert str(error.value).startswith(path)


def test_load_sweep_reads_common_and_entries(tmp_path):
  path = write_sweep(
    tmp_path / "sweep.py",
    entries({"name": "base"}, {"name": "lr", "optimizer.learning_rate": 3e-3, "total_steps": 7}),
    common={"total_steps": 5, "data.dynamic_masking": True},
  )
  sweep = sweeps.load_sweep(path)
  assert sweep.config == CONFIG and [r.name for r in sweep.runs] == ["base", "lr"]
  assert sweep.runs[0].settings == {"total_steps": 5, "data.dynamic_masking": True}
  assert sweep.runs[1].overrides == {"optimizer.learning_rate": 3e-3, "total_steps": 7}
  assert sweep.runs[1].settings == {
    "total_steps": 7,
    "data.dynamic_masking": True,
    "optimizer.learning_rate": 3e-3,
  }
  with pytest.raises(sweeps.SweepError, match=r"--only names runs \['nope'\]"):
    sweep.select(["nope"])
  with pytest.raises(sweeps.SweepError, match="sweep file not found"):
    sweeps.load_sweep(tmp_path / "missing.py")


def test_overrides_are_checked_against_the_config_before_anything_runs(tmp_path):
  good = write_sweep(tmp_path / "good.py", entries({"name": "a", "model.hidden_act": "gelu_tanh", "seed": 3}))
  sweeps.load_sweep(good, validate=True, cwd=ROOT)
  typo = write_sweep(tmp_path / "typo.py", entries({"name": "a"}, {"name": "b", "model.hiden_act": "gelu"}))
  with pytest.raises(
    sweeps.SweepError, match=r"run 'b': override 'model.hiden_act': .* did you mean 'model.hidden_act'\?"
  ):
    sweeps.load_sweep(typo, validate=True, cwd=ROOT)
  wrong_type = write_sweep(tmp_path / "type.py", entries({"name": "steps", "total_steps": "many"}))
  with pytest.raises(sweeps.SweepError, match=r"run 'steps': the overrides do not parse: .*total_steps=many"):
    sweeps.load_sweep(wrong_type, validate=True, cwd=ROOT)
  # The CLI refuses before it starts any run.
  root = tmp_path / "root"
  assert sweeps.main(["run", typo, "--root", str(root)]) == 2
  assert not root.exists()


def test_an_entry_may_carry_its_own_base_config(tmp_path):
  """The tasks of a paper table differ in their config argument: each entry names its own; CONFIG may go."""
  finetune = "configs/finetune.py:task=mrpc,seeds=2"
  path = write_sweep(
    tmp_path / "sweep.py",
    entries({"name": "mrpc", "config": finetune, "epochs": 2}, {"name": "mlm", "total_steps": 5}),
  )
  sweep = sweeps.load_sweep(path, validate=True, cwd=ROOT)
  assert [r.config for r in sweep.runs] == [finetune, CONFIG]
  assert sweep.runs[0].overrides == {"epochs": 2}  # "config" is the base, not an override
  argv = dict(sweeps.commands(sweep, "out", extra=["--config.seed=1"]))
  assert argv["mrpc"][3:] == [
    f"--config={finetune}",
    "--workdir=out/mrpc",
    "--config.epochs=2",
    "--config.seed=1",
  ]
  assert argv["mlm"][3] == f"--config={CONFIG}"
  # Without CONFIG, every entry must carry one; each is checked against its own base config.
  own = write_sweep(tmp_path / "own.py", entries({"name": "a", "config": finetune}), config=None)
  assert sweeps.load_sweep(own, validate=True, cwd=ROOT).config == ""
  half = write_sweep(
    tmp_path / "half.py", entries({"name": "a", "config": finetune}, {"name": "b"}), config=None
  )
  with pytest.raises(sweeps.SweepError, match="CONFIG is missing"):
    sweeps.load_sweep(half)
  bad = write_sweep(tmp_path / "bad.py", entries({"name": "a", "config": 3}))
  with pytest.raises(sweeps.SweepError, match=r"run 'a' .*'config' is 3; expected the run's base --config"):
    sweeps.load_sweep(bad)
  typo = write_sweep(tmp_path / "typo.py", entries({"name": "a", "config": finetune, "total_steps": 5}))
  with pytest.raises(
    sweeps.SweepError, match=r"run 'a': override 'total_steps': configs/finetune.py:task=mrpc"
  ):
    sweeps.load_sweep(typo, validate=True, cwd=ROOT)


# --- printed commands --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # inside ml_collections
def test_print_commands_local_and_tpu(tmp_path, capsys, monkeypatch):
  from absl import flags
  from ml_collections import config_flags

  path = write_sweep(
    tmp_path / "sweep.py",
    entries(
      {"name": "gelu"},
      {
        "name": "tanh",
        "model.hidden_act": "gelu_tanh",
        "optimizer.learning_rate": 0.003,
        "data.packing": True,
      },
    ),
    common={"total_steps": 300, "data.source": "data/my corpus.txt"},
  )
  monkeypatch.chdir(ROOT)  # the CLI checks CONFIG from where it runs, as bert_jax.main would load it
  assert sweeps.main(["print", path, "--root", "/gcs/bucket/study", "--launcher", "tpu", "pod", "us-b"]) == 0
  tpu = capsys.readouterr().out.splitlines()
  assert sweeps.main(["print", path, "--root", "runs/study", "--only", "tanh", "--", "--config.seed=4"]) == 0
  local = capsys.readouterr().out.splitlines()
  common = ["--config.total_steps=300", "--config.data.source=data/my corpus.txt"]
  assert [shlex.split(line) for line in tpu] == [
    [
      "bash",
      "launch.sh",
      "tpu",
      "pod",
      "us-b",
      "--",
      f"--config={CONFIG}",
      "--workdir=/gcs/bucket/study/gelu",
      *common,
    ],
    [
      *[
        "bash",
        "launch.sh",
        "tpu",
        "pod",
        "us-b",
        "--",
        f"--config={CONFIG}",
        "--workdir=/gcs/bucket/study/tanh",
      ],
      *common,
      "--config.model.hidden_act=gelu_tanh",
      "--config.optimizer.learning_rate=0.003",
      "--config.data.packing=True",
    ],
  ]
  assert len(local) == 1
  argv = shlex.split(local[0])
  assert argv[:5] == ["python", "-m", "bert_jax.main", f"--config={CONFIG}", "--workdir=runs/study/tanh"]
  assert argv[-1] == "--config.seed=4"
  # What bert_jax.main would make of it: the config parser itself reads the printed values back.
  main_args = [a for a in argv[3:] if not a.startswith("--workdir")]
  main_args[0] = f"--config={os.path.join(ROOT, CONFIG)}"
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=["x", *main_args])
  sys.path.insert(0, ROOT)
  try:
    values(["x", *main_args])
  finally:
    sys.path.remove(ROOT)
  config = values.config
  assert (config.model.hidden_act, config.optimizer.learning_rate, config.data.packing) == (
    "gelu_tanh",
    0.003,
    True,
  )
  assert (config.total_steps, config.data.source, config.seed) == (300, "data/my corpus.txt", 4)
  gpu = sweeps.commands(sweeps.load_sweep(path), "/shared/study", ("gpu",), only=["gelu"])
  assert gpu == [
    (
      "gelu",
      ["bash", "launch.sh", "gpu", "--", f"--config={CONFIG}", "--workdir=/shared/study/gelu", *common],
    )
  ]
  with pytest.raises(sweeps.SweepError, match="expected 'local', 'tpu NAME ZONE' or 'gpu'"):
    sweeps.commands(sweeps.load_sweep(path), "r", ("tpu", "pod"))


def test_help():
  result = subprocess.run(
    [sys.executable, "-m", "bert_jax.sweeps", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
  )
  assert result.returncode == 0, result.stderr
  assert "bert_jax.sweeps run SWEEP.py --root DIR" in result.stdout


# --- a real sweep --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """Three tiny pretraining runs on the first pages of Moby Dick: an invalid activation (fails), then GELU
  and tanh-GELU with a higher learning rate. 4 steps each, every step logged, one evaluation."""
  tmp = tmp_path_factory.mktemp("study")
  corpus = tmp / "corpus.txt"
  with open(BOOK, encoding="utf-8") as f:
    corpus.write_text(f.read(40_000), encoding="utf-8")
  # One vocabulary and one set of pretraining instances for all runs: built by the first, reused after.
  from bert_jax.tokenization import train_wordpiece

  train_wordpiece([str(corpus)], vocab_size=500).save(str(tmp / "vocab"))
  common = {
    "data.source": str(corpus),
    "data.vocab": str(tmp / "vocab"),
    "data.data_dir": str(tmp / "data"),
    "data.format": "paragraphs",
    "data.vocab_size": 500,
    "data.max_seq_length": 32,
    "data.masking.max_predictions": 5,
    "data.validation": 0.1,
    "batch_size": 8,
    "total_steps": 4,
    "log_every": 1,
    "eval_every": 4,
    "eval_batches": 2,
    "checkpoint_every": 4,
    "optimizer.warmup_steps": 2,
  }
  path = write_sweep(
    tmp / "sweep.py",
    entries(
      {"name": "bad", "model.hidden_act": "swishy"},  # a valid string, rejected when the model is built
      {"name": "gelu", "model.hidden_act": "gelu"},
      {"name": "tanh", "model.hidden_act": "gelu_tanh", "optimizer.learning_rate": 3e-3},
    ),
    common=common,
  )
  sweep = sweeps.load_sweep(path, validate=True, cwd=ROOT)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  root = tmp / "root"
  first = sweeps.run_sweep(sweep, str(root), env=env, cwd=ROOT, echo=False)
  again = sweeps.run_sweep(sweep, str(root), env=env, cwd=ROOT, echo=False)
  return dict(sweep=sweep, root=root, first=first, again=again, env=env)


def metrics(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_sweep_runs_records_and_continues_past_a_failure(study):
  root, first = study["root"], study["first"]
  assert {n: r["status"] for n, r in first.items()} == {"bad": "failed", "gelu": "ok", "tanh": "ok"}
  record = json.loads((root / "sweep.json").read_text())
  assert list(record["runs"]) == ["bad", "gelu", "tanh"]
  bad, tanh = record["runs"]["bad"], record["runs"]["tanh"]
  assert bad["returncode"] != 0 and "swishy" in bad["error"]
  assert "hidden_act='swishy'" in (root / "bad" / "run.log").read_text()
  assert tanh["returncode"] == 0 and tanh["wall_seconds"] > 0
  assert tanh["command"][1:3] == ["-m", "bert_jax.main"]
  assert f"--workdir={root / 'tanh'}" in tanh["command"]
  assert "--config.optimizer.learning_rate=0.003" in tanh["command"]
  assert "step 4/4" in (root / "tanh" / "run.log").read_text()
  # The job saw the overrides: its own config.json.
  written = json.loads((root / "tanh" / "config.json").read_text())
  assert (written["model"]["hidden_act"], written["optimizer"]["learning_rate"], written["total_steps"]) == (
    "gelu_tanh",
    0.003,
    4,
  )


def test_rerun_skips_finished_runs_and_retries_failed_ones(study):
  root, first, again = study["root"], study["first"], study["again"]
  assert again["gelu"] == first["gelu"] and again["tanh"] == first["tanh"]  # not run again: same record
  assert again["bad"]["status"] == "failed" and again["bad"]["started"] >= first["bad"]["started"]
  assert (root / "gelu" / "run.log").read_text().count("# bert_jax.sweeps") == 1
  assert (root / "bad" / "run.log").read_text().count("# bert_jax.sweeps") == 2


def test_report_matches_the_metrics(study, tmp_path):
  root = study["root"]
  out = tmp_path / "report"
  results = sweeps.write_report(study["sweep"], str(root), str(out))
  with open(out / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["name"] for r in rows] == ["bad", "gelu", "tanh"] == [r.name for r in results]
  assert rows[0]["status"] == "failed" and rows[0]["final_train_loss"] == "" and rows[0]["steps"] == ""
  table = (out / "results.md").read_text()
  for row in rows[1:]:
    records = metrics(root / row["name"] / "metrics.jsonl")
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    speeds = [r["train/tokens_per_second"] for r in records if "train/tokens_per_second" in r]
    assert len(losses) == 4 and len(evals) == 1
    assert float(row["final_train_loss"]) == pytest.approx(np.mean(losses[-3:]), rel=1e-12)
    assert float(row["last_eval_loss"]) == evals[-1]["eval/loss"]
    assert float(row["last_eval_mlm_accuracy"]) == float(row["best_eval_mlm_accuracy"])
    assert float(row["last_eval_mlm_accuracy"]) == evals[-1]["eval/mlm_accuracy"]
    assert float(row["median_tokens_per_second"]) == pytest.approx(np.median(speeds), rel=1e-12)
    assert (row["steps"], row["status"]) == ("4", "ok")
    line = next(x for x in table.splitlines() if x.startswith(f"| {row['name']} |"))
    assert f"| {np.mean(losses[-3:]):.4g} |" in line
  assert rows[2]["overrides"] == "model.hidden_act=gelu_tanh, optimizer.learning_rate=0.003"
  assert "- bad: failed: " in table and "swishy" in table
  assert (out / "loss_curves.png").read_bytes()[:8] == PNG_MAGIC
  import matplotlib.image

  assert matplotlib.image.imread(out / "loss_curves.png").shape[:2] == (450, 1200)


def test_an_unfinished_run_resumes_from_its_checkpoint(study, tmp_path):
  """A sweep killed during a run leaves it recorded as running: the next sweep runs it again, and the
  job continues from its workdir's checkpoint instead of starting over."""
  root = study["root"]
  state = json.loads((root / "sweep.json").read_text())
  state["runs"]["gelu"]["status"] = "running"
  (root / "sweep.json").write_text(json.dumps(state))
  result = sweeps.run_sweep(study["sweep"], str(root), only=["gelu"], env=study["env"], cwd=ROOT, echo=False)
  assert result["gelu"]["status"] == "ok"
  log = (root / "gelu" / "run.log").read_text().split("# bert_jax.sweeps")[-1]
  assert "start step 4 from checkpoint 4" in log and "step 1/4" not in log


def test_sigterm_is_passed_to_the_job_and_stops_the_sweep(tmp_path):
  """A stand-in job that signals the sweep (its parent) and, like train.py, exits 0 after the SIGTERM
  passed on to it: the run is recorded as interrupted (not ok) and the next run does not start."""
  job = tmp_path / "job.sh"
  job.write_text(
    "#!/bin/sh\ntrap 'echo \"got SIGTERM\"; kill $!; exit 0' TERM\necho started\nkill -TERM $PPID\n"
    "sleep 30 > /dev/null 2>&1 &\nwait\n"
  )
  job.chmod(0o755)
  path = write_sweep(tmp_path / "sweep.py", entries({"name": "first"}, {"name": "second"}))
  root = tmp_path / "root"
  before = signal.getsignal(signal.SIGTERM)
  result = sweeps.run_sweep(sweeps.load_sweep(path), str(root), echo=False, python=str(job))
  assert signal.getsignal(signal.SIGTERM) is before
  assert list(result) == ["first"] and result["first"]["status"] == "interrupted"
  assert result["first"]["wall_seconds"] < 5
  assert "got SIGTERM" in (root / "first" / "run.log").read_text()
  assert not (root / "second").exists()
  assert json.loads((root / "sweep.json").read_text())["runs"]["first"]["status"] == "interrupted"


def test_a_leftover_process_holding_the_output_does_not_hold_up_the_sweep(tmp_path, monkeypatch):
  job = tmp_path / "job.sh"
  job.write_text("#!/bin/sh\necho job done\nsleep 5 &\nexit 0\n")  # the sleep keeps the output open
  job.chmod(0o755)
  monkeypatch.setattr(sweeps, "DRAIN_SECONDS", 0.5)
  path = write_sweep(tmp_path / "sweep.py", entries({"name": "a"}, {"name": "b"}))
  result = sweeps.run_sweep(sweeps.load_sweep(path), str(tmp_path / "root"), echo=False, python=str(job))
  assert [r["status"] for r in result.values()] == ["ok", "ok"]
  assert all(r["wall_seconds"] < 10 for r in result.values())
  log = (tmp_path / "root" / "a" / "run.log").read_text()
  assert "job done" in log and "still holds its output open" in log


def test_report_without_a_record_judges_runs_by_their_metrics(tmp_path):
  """Runs made elsewhere (e.g. on a pod) and copied down: finished, stopped early, never started, and a
  torn last line from a killed writer."""
  path = write_sweep(
    tmp_path / "sweep.py", entries({"name": "done"}, {"name": "partial"}, {"name": "absent"})
  )
  root = tmp_path / "root"
  for name, losses in (("done", [5.0, 4.0, 3.0, 2.0, 1.0]), ("partial", [6.0, 5.5])):
    (root / name).mkdir(parents=True)
    (root / name / "config.json").write_text(json.dumps({"job": "pretrain", "total_steps": 50}))
    lines = [json.dumps({"step": 10 * (i + 1), "train/loss": v}) for i, v in enumerate(losses)]
    (root / name / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  with open(root / "partial" / "metrics.jsonl", "a") as f:
    f.write('{"step": 30, "train/lo')
  results = {r.name: r for r in sweeps.write_report(sweeps.load_sweep(path), str(root))}
  assert (results["done"].status, results["done"].final_train_loss, results["done"].steps) == ("ok", 2.0, 50)
  assert results["partial"].status == "incomplete" and "stopped at step 20 of 50" in results["partial"].error
  assert results["partial"].final_train_loss == 5.75
  assert results["absent"].status == "missing" and results["absent"].final_train_loss is None
  table = (root / "report" / "results.md").read_text()
  assert "| done | (base) | 2 | — | — | — | — | 50 | ok |" in table
  assert (root / "report" / "loss_curves.png").read_bytes()[:8] == PNG_MAGIC


# --- attention scaling -------------------------------------------------------------------------


SCALING = [
  {"attention": "dense", "seq_len": 512, "ms": 3.125, "peak_bytes": 100 * 2**20, "status": "ok"},
  {"attention": "dense", "seq_len": 128, "ms": 0.5213, "peak_bytes": 10 * 2**20, "status": "ok"},
  {"attention": "dense", "seq_len": 2048, "ms": None, "peak_bytes": None, "status": "out of memory"},
  {"attention": "chunked", "seq_len": 128, "ms": 0.61, "peak_bytes": None, "status": "ok"},
  {"attention": "chunked", "seq_len": 2048, "ms": 6.25, "peak_bytes": 3 * 2**19, "status": "ok"},
]


def test_write_scaling_table_and_plot(tmp_path):
  md, png = sweeps.write_scaling(SCALING, str(tmp_path), source="bench.json")
  lines = open(md).read().splitlines()
  start = lines.index("| seq_len | dense ms | dense MiB | chunked ms | chunked MiB |")
  assert lines[start + 2 : start + 5] == [
    "| 128 | 0.5213 | 10 | 0.61 | — |",
    "| 512 | 3.125 | 100 | — | — |",
    "| 2048 | out of memory | — | 6.25 | 1.5 |",
  ]
  assert open(png, "rb").read(8) == PNG_MAGIC


def test_scaling_records_are_checked(tmp_path):
  with pytest.raises(sweeps.SweepError, match=r"record 1 .*expected seq_len \(an integer\)"):
    sweeps.write_scaling([SCALING[0], dict(SCALING[1], seq_len="128")], str(tmp_path))
  with pytest.raises(sweeps.SweepError, match=r"ms \(a positive number when status is ok\)"):
    sweeps.write_scaling([dict(SCALING[0], ms=None)], str(tmp_path))
  with pytest.raises(sweeps.SweepError, match="dense at seq_len 512 repeats record 0"):
    sweeps.write_scaling([SCALING[0], SCALING[0]], str(tmp_path))
  bad = tmp_path / "bench.json"
  bad.write_text(json.dumps([SCALING[0], {"attention": "x"}]))
  with pytest.raises(sweeps.SweepError, match=r"bench.json\[1\]"):
    sweeps.write_scaling(sweeps.read_scaling([str(bad)]), str(tmp_path))
  assert not (tmp_path / "scaling.md").exists()


def test_scaling_script_measures_resident_memory_in_fresh_processes(tmp_path):
  """experiments/attention_study/scaling.py --memory rss: each variant's peak is the resident-set growth over
  its first call in a fresh process (the buffers XLA's own accounting cannot see included), and the record
  says which memory it is."""
  script = os.path.join(ROOT, "experiments", "attention_study", "scaling.py")
  out = tmp_path / "scaling"
  args = [
    "--out",
    str(out),
    "--lengths",
    "512",
    "--variants",
    "dense,linear",
    "--repeats",
    "1",
    "--memory",
    "rss",
  ]
  subprocess.run([sys.executable, script, *args], check=True, capture_output=True, cwd=str(tmp_path))
  records = json.loads((out / "scaling.json").read_text())
  assert [(r["attention"], r["status"]) for r in records] == [("dense", "ok"), ("linear", "ok")]
  assert all(isinstance(r["peak_bytes"], int) and r["peak_bytes"] >= 0 for r in records)
  assert json.loads((out / "scaling.meta.json").read_text())["memory"] == "rss"
  assert "memory: rss" in (out / "scaling.md").read_text()


def test_bucket_root_is_refused(tmp_path, capsys):
  # Its runs' workdirs would be gs:// URLs, which bert_jax.main refuses (README, 'Cloud Storage').
  path = write_sweep(tmp_path / "sweep.py", entries({"name": "a"}))
  for command in ("print", "run", "report"):
    assert sweeps.main([command, path, "--root", "gs://bucket/study"]) == 2
    assert "--root='gs://bucket/study' is a gs:// URL" in capsys.readouterr().err


def test_a_finetuning_job_that_exits_0_before_its_end_is_incomplete(tmp_path):
  """SIGTERM (or a preemption notice) stops a fine-tuning run with a checkpoint and exit status 0; the sweep
  must record it as incomplete, or a rerun would skip it as finished."""
  one = tmp_path / "one"
  one.mkdir()
  (one / "config.json").write_text(json.dumps({"job": "finetune"}))
  assert "no result.json" in sweeps.incomplete(str(one))
  (one / "result.json").write_text("{}")
  assert sweeps.incomplete(str(one)) is None
  # A grid: its runs in lr{LR}_seed{SEED}/, summary.json once all of them have finished.
  grid = tmp_path / "grid"
  for name, finished in (("lr5e-05_seed0", True), ("lr5e-05_seed1", False)):
    (grid / name).mkdir(parents=True)
    (grid / name / "config.json").write_text(json.dumps({"job": "finetune"}))
    if finished:
      (grid / name / "result.json").write_text("{}")
  assert "1 of the 2 runs started have result.json" in sweeps.incomplete(str(grid))
  (grid / "summary.json").write_text("{}")
  assert sweeps.incomplete(str(grid)) is None
  assert sweeps.incomplete(str(tmp_path / "never_started")) is None
