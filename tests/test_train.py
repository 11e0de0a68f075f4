"""The experiment runner end to end on real text (the bundled Moby Dick), on CPU: training, resume
after SIGKILL, SIGTERM, damaged checkpoints, NaN, and config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from bert_jax import checkpointing, summaries, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOK = os.path.join(ROOT, "data", "samples", "en_mobydick.txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """The first chapters of Moby Dick (about 100 KB), as paragraphs."""
  path = tmp_path_factory.mktemp("corpus") / "mobydick_head.txt"
  with open(BOOK, encoding="utf-8") as f:
    path.write_text(f.read(100_000), encoding="utf-8")
  return str(path)


def small_config(corpus, **overrides):
  from configs import pretrain

  config = pretrain.get_config("variant=L-2_H-64_A-2,objective=mlm_nsp")
  config.unlock()
  config.data.source = corpus
  config.data.format = "paragraphs"
  config.data.vocab_size = 1000
  config.data.max_seq_length = 64
  config.data.dupe_factor = 2
  config.data.validation = 0.05
  config.data.masking.max_predictions = 10
  config.batch_size = 16
  config.total_steps = 30
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 5
  config.log_every = 5
  config.eval_every = 10
  config.eval_batches = 4
  config.checkpoint_every = 10
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.lock()
  return config


@pytest.fixture(scope="module")
def vocab(corpus, tmp_path_factory):
  """One vocabulary for runs that are compared: the WordPiece trainer (tokenizers' Rust code) breaks
  frequency ties differently from process to process, so two fresh runs would train different vocabs."""
  from bert_jax.tokenization import train_wordpiece

  path = tmp_path_factory.mktemp("vocab")
  train_wordpiece([corpus], vocab_size=1000).save(path)
  return str(path)


def _cli(workdir, corpus, *extra, **kw):
  args = [
    sys.executable,
    "-m",
    "bert_jax.main",
    "--config=configs/pretrain.py:variant=L-2_H-64_A-2",
    f"--workdir={workdir}",
    f"--config.data.source={corpus}",
    "--config.data.format=paragraphs",
    "--config.data.vocab_size=1000",
    "--config.data.max_seq_length=64",
    "--config.data.dupe_factor=2",
    "--config.data.validation=0.05",
    "--config.data.masking.max_predictions=10",
    "--config.batch_size=16",
    "--config.total_steps=30",
    "--config.optimizer.learning_rate=2e-3",
    "--config.optimizer.warmup_steps=5",
    "--config.log_every=1",
    "--config.eval_every=10",
    "--config.eval_batches=4",
    "--config.checkpoint_every=10",
    *extra,
  ]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.Popen(
    args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw
  )


def _final_state(workdir):
  """(params, opt_state, step, data iterator state) of the newest checkpoint, read without a model."""
  import orbax.checkpoint as ocp

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step()
  restored = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  data_dir = os.path.join(workdir, "checkpoints", str(step), "data")
  data = {
    name: open(os.path.join(data_dir, name)).read()
    for name in sorted(os.listdir(data_dir))
    if name != "commit_success.txt"
  }  # that one names its own path
  ckpt.close()
  return jax.device_get(restored["state"]), step, data


def test_pretraining_run_learns_and_writes_everything(corpus, tmp_path):
  result = train.train_and_evaluate(
    small_config(corpus, total_steps=120, eval_every=60, eval_batches=8, checkpoint_every=30), tmp_path
  )
  assert result["step"] == 120 and not result["preempted"]
  records = summaries.read_metrics(tmp_path / "metrics.jsonl")
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5  # the loss falls
  evals = [r for r in records if "eval/mlm_accuracy" in r]
  assert (
    evals[-1]["eval/mlm_accuracy"] >= evals[-1]["eval/unigram_baseline_accuracy"] - 0.01
  )  # see the demo for a longer run
  for name in ("train/mlm_accuracy", "train/nsp_accuracy", "train/tokens_per_second", "train/grad_norm"):
    assert name in records[-1] or any(name in r for r in records)
  assert (tmp_path / "curves.png").stat().st_size > 1000
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["120", "60", "90"]  # the last 3 (60 is also best)
  assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 120


def test_resume_after_sigkill_is_exact(corpus, vocab, tmp_path, monkeypatch):
  """Killed (SIGKILL) at an arbitrary step and resumed: the same params, optimizer state and data
  position as an uninterrupted run, bitwise."""
  data_dir = str(tmp_path / "data")
  # The three runs share a compilation cache of their own: the killed and the resumed run load the
  # straight run's executables (bert_jax/compile_cache.py), which must not change a bit of the result.
  cache = tmp_path / "xla_cache"
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # keep even the tiny model's compiles
  args = (
    f"--config.data.vocab={vocab}",
    f"--config.data.data_dir={data_dir}",
    f"--compilation_cache={cache}",
  )
  straight = _cli(tmp_path / "straight", corpus, *args)
  assert straight.wait(timeout=600) == 0, straight.stdout.read()[-3000:]
  written = sorted(os.listdir(cache))
  assert any(name.endswith("-cache") for name in written), written
  killed = _cli(tmp_path / "killed", corpus, *args)
  for line in killed.stdout:
    if line.startswith("step 25/"):
      killed.send_signal(signal.SIGKILL)
      break
  killed.wait(timeout=60)
  assert killed.returncode == -signal.SIGKILL
  resumed = _cli(tmp_path / "killed", corpus, *args)
  out = resumed.communicate(timeout=600)[0]
  assert resumed.returncode == 0, out[-3000:]
  # No new entries: every step the killed and resumed runs compiled had the key the straight run wrote.
  assert sorted(os.listdir(cache)) == written
  started = int(out.split("start step ")[1].split()[0])
  assert started in (10, 20) and f"from checkpoint {started}" in out  # the output lags the kill a little
  a, step_a, data_a = _final_state(tmp_path / "straight")
  b, step_b, data_b = _final_state(tmp_path / "killed")
  assert step_a == step_b == 30 and data_a == data_b
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  steps = [
    r["step"] for r in summaries.read_metrics(tmp_path / "killed" / "metrics.jsonl") if "train/loss" in r
  ]
  assert steps == list(range(1, 31))  # each step logged once, though some ran twice


def test_sigterm_saves_a_checkpoint_and_stops(corpus, tmp_path):
  proc = _cli(
    tmp_path, corpus, "--config.total_steps=1000", "--config.checkpoint_every=1000", "--config.eval_every=0"
  )
  for line in proc.stdout:
    if line.startswith("step 12/"):
      proc.send_signal(signal.SIGTERM)
      break
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out[-3000:]
  assert "stopped by SIGTERM at step" in out
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
  assert len(steps) == 1 and 12 <= steps[0] < 20


def test_damaged_or_partial_checkpoints_fall_back(corpus, tmp_path):
  train.train_and_evaluate(small_config(corpus, total_steps=20, eval_every=0), tmp_path)
  ckpt_dir = tmp_path / "checkpoints"
  assert sorted(os.listdir(ckpt_dir)) == ["10", "20"]
  # A write interrupted mid-way leaves only a temporary folder, never a step that looks complete.
  (ckpt_dir / "30.orbax-checkpoint-tmp").mkdir()
  # The newest complete step is damaged: every array file truncated.
  for root, _, names in os.walk(ckpt_dir / "20" / "state"):
    for name in names:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 100:
        with open(path, "r+b") as f:
          f.truncate(50)
  config = small_config(corpus, total_steps=25, eval_every=0)
  result = train.train_and_evaluate(config, tmp_path)
  assert result["step"] == 25
  records = summaries.read_metrics(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records if "train/loss" in r][-4:] == [10, 15, 20, 25]
  assert "20.damaged-0" in os.listdir(ckpt_dir)  # set aside for inspection; step 20 was trained again
  assert sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) == [10, 20, 25]


def test_nan_stops_the_run_with_the_step(corpus, tmp_path):
  config = small_config(
    corpus,
    **{
      "optimizer.learning_rate": 1e12,
      "optimizer.grad_clip": 0.0,
      "optimizer.warmup_steps": 1,
      "log_every": 1000,
      "eval_every": 0,
    },
  )
  with pytest.raises(train.TrainingError, match=r"non-finite metrics at step \d+"):
    train.train_and_evaluate(config, tmp_path)


def test_config_errors(corpus, tmp_path):
  config = small_config(corpus)
  with pytest.raises(AttributeError):
    config.batch_sise = 3  # locked: a misspelled key fails
  bad = small_config(
    corpus,
    phases=[
      dict(steps=20, max_seq_length=64, batch_size=16),
      dict(steps=20, max_seq_length=128, batch_size=8),
    ],
  )
  with pytest.raises(ValueError, match=r"config.phases add up to 40 steps but config.total_steps=30"):
    train.train_and_evaluate(bad, tmp_path)
  bad = small_config(corpus, phases=[dict(steps=30, max_seq_len=64, batch_size=16)])
  with pytest.raises(ValueError, match=r"config.phases\[0\]: unknown keys \['max_seq_len'\]"):
    train.train_and_evaluate(bad, tmp_path)
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n")
  with pytest.raises(ValueError, match="empty"):
    train.train_and_evaluate(small_config(str(empty)), tmp_path / "run_empty")
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("Caf\xe9 au lait.\n".encode("latin-1"))
  with pytest.raises(ValueError, match="latin1.txt"):
    train.train_and_evaluate(small_config(str(latin1)), tmp_path / "run_latin1")
  with pytest.raises(Exception, match="batch size 12 does not divide"):
    train.train_and_evaluate(small_config(corpus, batch_size=12, **{"mesh.data": 8}), tmp_path / "run_batch")


def test_init_from_a_huggingface_checkpoint_with_two_phases_in_bfloat16(corpus, tmp_path):
  """init_from copies a converted HuggingFace checkpoint into the state (learning rate 0 keeps it),
  two phases (sequence length 32, then 64) run as one, and bf16 compute keeps float32 params."""
  import bert_jax
  from bert_jax import convert
  from tests import helpers

  hf = tmp_path / "hf"
  helpers.tiny_hf_folder(str(hf))
  config = small_config(
    corpus,
    total_steps=4,
    eval_every=0,
    checkpoint_every=2,
    log_every=1,
    phases=[
      dict(steps=2, max_seq_length=32, batch_size=16, max_predictions=5),
      dict(steps=2, max_seq_length=64, batch_size=8, max_predictions=10),
    ],
    **{
      "data.vocab": str(hf),
      "init_from": str(hf),
      "optimizer.learning_rate": 0.0,
      "optimizer.warmup_steps": 1,
      "model.hidden_size": 32,
      "model.num_heads": 4,
      "model.mlp_dim": 64,
      "model.max_position_embeddings": 64,
      "model.dtype": "bfloat16",
    },
  )
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert result["step"] == 4
  # one dataset per phase (and the lock file each build took beside it)
  assert sorted(os.listdir(tmp_path / "run" / "data")) == ["seq32", "seq32.lock", "seq64", "seq64.lock"]
  state, step, _ = _final_state(tmp_path / "run")
  want = convert.flatten(bert_jax.from_pretrained(hf).params)
  got = convert.flatten(state["params"])
  assert step == 4 and set(want) <= set(got)
  for name, value in want.items():
    assert got[name].dtype == np.float32
    np.testing.assert_array_equal(got[name], np.asarray(value), err_msg=name)


def test_files_of_process_zero_unseen_elsewhere_say_the_workdir_is_not_shared(tmp_path, monkeypatch):
  written = tmp_path / "vocab.txt"
  written.write_text("[PAD]\n")
  missing = tmp_path / "elsewhere" / "vocab.txt"
  train.require_shared(str(missing), "the vocabulary")  # one process: nothing to compare with
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  train.require_shared(str(written), "the vocabulary")
  with pytest.raises(train.TrainingError, match=r"process 1 cannot see the vocabulary .*every host shares"):
    train.require_shared(str(missing), "the vocabulary", wait_s=0.0)
