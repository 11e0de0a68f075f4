"""The command-line entry points, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bert_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, stdin=None):
  return subprocess.run(
    [sys.executable, *args], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=300
  )


def test_predict_cli_writes_pooled_embeddings(minilm_dir):
  lines = ["Call me Ishmael.", json.dumps({"text": "Some years ago.", "pair": "Never mind how long."})]
  result = run(
    ["-m", "bert_jax.predict", "--model", minilm_dir, "--pooling", "mean", "-"], stdin="\n".join(lines) + "\n"
  )
  assert result.returncode == 0, result.stderr
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["text"] for r in records] == ["Call me Ishmael.", "Some years ago."]
  assert records[1]["pair"] == "Never mind how long."
  bert = bert_jax.from_pretrained(minilm_dir, pooling="mean")
  want_single = bert.encode(["Call me Ishmael."])["pooler_output"][0]
  want_pair = bert.encode(["Some years ago."], ["Never mind how long."])["pooler_output"][0]
  np.testing.assert_allclose(records[0]["embedding"], want_single, atol=1e-6)
  np.testing.assert_allclose(records[1]["embedding"], want_pair, atol=1e-6)


def test_predict_cli_bad_input(minilm_dir, tmp_path):
  result = run(["-m", "bert_jax.predict", "--model", str(tmp_path), "-"], stdin="hi\n")
  assert result.returncode == 2 and "not a BERT checkpoint folder" in result.stderr
  bad = tmp_path / "in.txt"
  bad.write_text('fine\n{"txt": 1}\n')
  result = run(["-m", "bert_jax.predict", "--model", minilm_dir, str(bad)])
  assert (
    result.returncode == 2 and f'{bad}:2: expected a JSON object with a string "text" field' in result.stderr
  )


def test_demo_job_embeds_and_ranks_paraphrases(tmp_path):
  """The README's main job: paraphrase pairs must come out as each other's nearest neighbour."""
  result = run(["-m", "bert_jax.main", "--config=configs/embed.py", f"--workdir={tmp_path}"])
  assert result.returncode == 0, result.stderr[-3000:]
  embeddings = np.load(tmp_path / "embeddings.npy")
  assert embeddings.shape == (6, 384)
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  similarity = unit @ unit.T
  np.fill_diagonal(similarity, -1)
  assert list(similarity.argmax(axis=1)) == [1, 0, 3, 2, 5, 4]
  table = (tmp_path / "similarity.md").read_text()
  assert "| 0 | A man is playing a guitar on stage. |" in table


def test_main_refuses_bucket_urls_before_writing(tmp_path):
  """A gs:// workdir or path field is refused at once, naming it: os.makedirs would have made a local folder
  "gs:" on every host, each worker writing its own copy."""
  result = run(["-m", "bert_jax.main", "--config=configs/demo.py", "--workdir=gs://bucket/runs/demo"])
  assert result.returncode != 0
  assert (
    "--workdir='gs://bucket/runs/demo' is a gs:// URL" in result.stderr and "/gcs/BUCKET" in result.stderr
  )
  result = run(
    [
      "-m",
      "bert_jax.main",
      "--config=configs/demo.py",
      f"--workdir={tmp_path / 'run'}",
      "--config.finetune.data.train=s3://bucket/train.jsonl",
    ]
  )
  assert result.returncode != 0
  assert "--config.finetune.data.train='s3://bucket/train.jsonl' is a s3:// URL" in result.stderr
  assert not (tmp_path / "run").exists() and not os.path.exists(os.path.join(ROOT, "gs:"))


def test_config_path_fields():
  from ml_collections import ConfigDict

  from bert_jax import files

  config = ConfigDict(
    {
      "data": {"source": "gs://b/*.txt", "tfds_data_dir": "gs://b/tfds", "text_field": "x://y"},
      "predict": {"texts": ["https://example.com is a text, not a path"]},
    }
  )
  with pytest.raises(ValueError, match=r"--config\.data\.source='gs://b/\*\.txt' is a gs:// URL"):
    files.check_config_paths(config)
  config.data.source = "corpus/a.txt, gs://b/c.txt"  # comma-separated: every part is checked
  with pytest.raises(ValueError, match=r"--config\.data\.source='gs://b/c\.txt' is a gs:// URL"):
    files.check_config_paths(config)
  config.data.source = "corpus/*.txt"
  files.check_config_paths(config)  # TFDS opens gs:// data dirs itself; texts and field names are not paths
  bad_hub = ConfigDict({"finetune": {"init_from": "hf://a/b/c"}})
  with pytest.raises(
    ValueError, match=r"--config\.finetune\.init_from: 'hf://a/b/c' is not a Hub model name"
  ):
    files.check_config_paths(bad_hub)
  assert files.is_url("hf://org/model") and not files.is_url("C:/data") and not files.is_url("a/b://c")
