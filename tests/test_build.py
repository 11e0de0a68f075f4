"""Pretraining data built on every core and every host (bert_jax/data/build.py): the records are the same bytes
with one worker, two worker processes or two jax.distributed processes; bad input names the chunk or the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.data import build as build_lib
from bert_jax.data import records, text
from bert_jax.tokenization import Tokenizer
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "sample_text.txt")
# Small chunks, so that the sample (40 lines as documents) makes several of them per split.
BUILD = dict(max_seq_length=48, pair_task="nsp", dupe_factor=2, validation=6, seed=3, chunk_documents=4)


@pytest.fixture(scope="module")
def vocab_file(minilm_dir) -> str:
  return os.path.join(minilm_dir, "vocab.txt")


def _build(data_dir, vocab_file, **overrides):
  kwargs = dict(
    BUILD, source=text.LocalTextSource(SAMPLE, format="lines"), tokenizer=Tokenizer.from_vocab(vocab_file)
  )
  kwargs.update(overrides)
  return records.build_pretraining_data(data_dir, **kwargs)


def _records(data_dir) -> dict[str, list[tuple[bytes, ...]]]:
  out = {}
  manifest = records.read_manifest(data_dir)
  for split in manifest["splits"]:
    _, source = records.open_split(data_dir, split)
    out[split] = [
      tuple(np.asarray(source[i][n]).tobytes() for n in manifest["features"]) for i in range(len(source))
    ]
  return out


def _record_files(data_dir) -> dict[str, bytes]:
  """The dataset's record files, byte for byte (the records serialize with sorted feature keys)."""
  folder = data_dir / records.read_manifest(data_dir)["tfds_dir"]
  return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if ".array_record-" in p.name}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, vocab_file):
  data_dir = tmp_path_factory.mktemp("one") / "data"
  manifest = _build(data_dir, vocab_file, workers=1)
  return data_dir, manifest


def test_two_worker_processes_write_the_same_records(one_worker, vocab_file, tmp_path):
  data_dir, manifest = one_worker
  assert sum(1 for _ in records.read_manifest(data_dir)["splits"]) == 2
  two = _build(tmp_path / "data", vocab_file, workers=2)
  assert two["splits"] == manifest["splits"] and two["config"] == manifest["config"]
  assert _records(tmp_path / "data") == _records(data_dir)
  assert _record_files(tmp_path / "data") == _record_files(data_dir)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "data.lock"]  # shards gone once published


def _two_processes(tmp_path, vocab_file, mode: str) -> list[tuple[int, str]]:
  worker = os.path.join(ROOT, "tests", "build_worker.py")
  return helpers.two_jax_processes([worker, str(tmp_path / "data"), SAMPLE, vocab_file, mode], 1, timeout=300)


def test_two_jax_processes_build_like_one(one_worker, vocab_file, tmp_path):
  """Each of two jax.distributed processes builds its own chunks (i, i + 2, ...); process 0 writes the dataset,
  record for record the single-process build's."""
  for i, (code, out) in enumerate(_two_processes(tmp_path, vocab_file, "ok")):
    assert code == 0, f"process {i} failed:\n{out[-4000:]}"
  assert _records(tmp_path / "data") == _records(one_worker[0])
  assert _record_files(tmp_path / "data") == _record_files(one_worker[0])


def test_two_jobs_racing_for_one_data_dir_build_it_once(one_worker, vocab_file, tmp_path):
  """Two independent jobs start building one data_dir at once: one builds, the other waits on the lock and then
  reuses what the first published; the dataset is the single build's."""
  worker = os.path.join(ROOT, "tests", "build_worker.py")
  argv = [sys.executable, worker, str(tmp_path / "data"), SAMPLE, vocab_file, "race"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [
    subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in "ab"
  ]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  built = sorted(outs, key=lambda out: "chunks built here: []" in out)
  assert "chunks built here: []" not in built[0] and "chunks built here: []" in built[1], outs
  assert "another process is building" in built[1] and "reusing the pretraining data" in built[1]
  assert _record_files(tmp_path / "data") == _record_files(one_worker[0])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "data.lock"]


def test_a_failure_on_one_process_stops_both(vocab_file, tmp_path):
  """Process 1 fails in its first chunk: it names the chunk, process 0 says another process failed; neither
  waits forever at a barrier, nothing is published."""
  (code0, out0), (code1, out1) = _two_processes(tmp_path, vocab_file, "fail1")
  assert code0 != 0 and code1 != 0
  assert "building chunk 1 of the train split" in out1 and "simulated failure" in out1
  assert "another process failed while building its chunks" in out0
  assert not (tmp_path / "data").exists()


def test_a_corpus_file_that_changes_while_building_stops_the_build(tmp_path, vocab_file, monkeypatch):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(open(SAMPLE, encoding="utf-8").read(), encoding="utf-8")
  real = build_lib.chunk_instances

  def appending(chunk, *args, **kwargs):
    with open(corpus, "a", encoding="utf-8") as f:
      f.write("A line written while the build reads the file.\n")
    return real(chunk, *args, **kwargs)

  monkeypatch.setattr(build_lib, "chunk_instances", appending)
  with pytest.raises(
    build_lib.BuildError, match=rf"corpus file {corpus} changed while the build was reading it"
  ):
    _build(tmp_path / "data", vocab_file, source=text.LocalTextSource(str(corpus), format="lines"))
  assert not (tmp_path / "data").exists()


class FailingTokenizer(Tokenizer):
  """Fails on one text: a stand-in for a bug in a worker process (the class is importable there)."""

  def __call__(self, texts, *args, **kwargs):
    if any("Ishmael" in t for t in texts):
      raise RuntimeError("tokenizer bug")
    return super().__call__(texts, *args, **kwargs)


def test_a_failing_worker_names_the_chunk_and_its_first_document(tmp_path, vocab_file):
  tokenizer = FailingTokenizer.from_vocab(vocab_file)
  with pytest.raises(build_lib.BuildError) as err:
    _build(tmp_path / "data", vocab_file, tokenizer=tokenizer, workers=2)
  message = str(err.value)
  assert "RuntimeError: tokenizer bug" in message and "documents from document #" in message
  assert "which begins" in message and "split" in message
  assert not (tmp_path / "data").exists() and len(list(tmp_path.glob("data.partial-*"))) == 1


class DyingTokenizer(Tokenizer):
  """Kills the spawned worker process that uses it, as the OOM killer would; slow in the runner's own process, so
  that the worker starts and takes a chunk before the runner has built them all."""

  def __call__(self, texts, *args, **kwargs):
    import multiprocessing
    import time

    if multiprocessing.parent_process() is not None:
      os._exit(3)
    time.sleep(1.5)
    return super().__call__(texts, *args, **kwargs)


def test_a_worker_process_that_dies_stops_the_build_naming_its_chunks(tmp_path, vocab_file):
  tokenizer = DyingTokenizer.from_vocab(vocab_file)
  with pytest.raises(
    build_lib.BuildError, match=r"a worker process died \(exit code 3\) while building one of: chunk"
  ):
    _build(tmp_path / "data", vocab_file, tokenizer=tokenizer, workers=2)
  assert not (tmp_path / "data").exists()


def test_workers_setting(caplog):
  assert build_lib.resolve_workers(0) == build_lib.available_cores()
  assert build_lib.resolve_workers(1) == 1
  with caplog.at_level("WARNING"):
    assert build_lib.resolve_workers(build_lib.available_cores() + 3) == build_lib.available_cores() + 3
  assert "more than this machine's" in caplog.text
  with pytest.raises(build_lib.BuildError, match=r"data.workers=-1; expected 0 \(every core\)"):
    build_lib.resolve_workers(-1)


def test_build_data_job_builds_every_phase_and_stops(tmp_path):
  """python -m bert_jax.main --config=configs/pretrain.py:... --config.job=build_data: instances of both phases,
  no training."""
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "bert_jax.main",
      "--config=configs/pretrain.py:variant=tiny,runlocal=True",
      f"--workdir={tmp_path}",
      "--config.job=build_data",
      f"--config.data.source={SAMPLE}",
      "--config.data.format=lines",
      "--config.data.validation=0.1",
      "--config.data.vocab_size=600",
      "--config.data.workers=1",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "data ready; train with --config.data.data_dir=" in result.stdout
  manifest = json.loads((tmp_path / "data" / "seq128" / records.MANIFEST).read_text())
  assert manifest["splits"]["train"]["instances"] > 0
  assert not (tmp_path / "checkpoints").exists()


def test_chunks_close_at_a_document_or_character_limit():
  """Each chunk but the last is the shortest run of at least 2 documents reaching either limit; the last is the
  rest (itself full, or the whole split); together they are the split's documents in order."""

  class Docs:
    def __init__(self, lengths):
      self.lengths = lengths

    def documents(self):
      for i, n in enumerate(self.lengths):
        yield ["x" * n]

  rng = np.random.default_rng(0)
  for size, max_chars in ((5, 0), (100, 50), (4, 30), (3, 1)):
    lengths = [int(x) for x in rng.integers(1, 40, size=60)]
    chunks = list(
      build_lib.plan_chunks(Docs(lengths), lambda i: False, ("train",), size, max_chars=max_chars)
    )
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [len(d[0]) for c in chunks for d in c.documents] == lengths

    def full(docs):
      chars = sum(len(d[0]) for d in docs)
      return len(docs) >= 2 and (len(docs) >= size or (max_chars > 0 and chars >= max_chars))

    for c in chunks[:-1]:
      assert full(c.documents) and not full(c.documents[:-1])
    assert full(chunks[-1].documents) or len(chunks) == 1
