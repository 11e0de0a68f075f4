"""Tests for the pretraining data path: text -> documents (bert_jax.data.text), instances written
once as a TFDS array_record dataset (bert_jax.data.records), and the grain pipeline that masks and
batches them per process (bert_jax.data.pipeline).

Text is tests/data/sample_text.txt (Moby-Dick and King James lines plus multilingual lines); the
vocabulary is the real uncased all-MiniLM-L6-v2 vocab.txt. Nothing here needs TensorFlow.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_jax.data import masking, pipeline, records, text
from bert_jax.tokenization import Tokenizer

SAMPLE = Path(__file__).resolve().parent / "data" / "sample_text.txt"
MAX_LEN = 64
MASKING = masking.MaskingConfig(max_predictions=10)


def sample_lines() -> list[str]:
  # Only "\n" ends a line in a file; str.splitlines would also cut at the form feed, NEL and
  # line separator that some sample lines hold.
  return SAMPLE.read_text(encoding="utf-8").removesuffix("\n").split("\n")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir) -> Tokenizer:
  return Tokenizer.from_vocab(os.path.join(minilm_dir, "vocab.txt"))


@pytest.fixture(scope="module")
def vocab(tokenizer) -> pipeline.VocabInfo:
  return pipeline.VocabInfo.from_tokenizer(tokenizer)


def build(data_dir, tokenizer, **overrides):
  kwargs = dict(
    source=text.LocalTextSource(SAMPLE, format="lines"),
    tokenizer=tokenizer,
    max_seq_length=MAX_LEN,
    pair_task="nsp",
    dupe_factor=2,
    validation=4,
    seed=0,
    chunk_documents=16,
  )
  kwargs.update(overrides)
  return records.build_pretraining_data(data_dir, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer):
  data_dir = tmp_path_factory.mktemp("pretrain") / "data"
  manifest = build(data_dir, tokenizer)
  return data_dir, manifest


def train_dataset(data_dir, vocab, split="train", **overrides):
  kwargs = dict(
    global_batch_size=8,
    seed=3,
    masking=MASKING,
    vocab=vocab,
    max_seq_length=MAX_LEN,
    process_index=0,
    process_count=1,
  )
  kwargs.update(overrides)
  return pipeline.make_dataset(data_dir, split, **kwargs)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def unmasked_rows(batch) -> list[tuple]:
  """Each row's original (tokens, token_type_ids): the masked positions put back."""
  rows = []
  for r in range(len(batch["input_ids"])):
    n = int(batch["attention_mask"][r].sum())
    ids = batch["input_ids"][r, :n].copy()
    w = batch["masked_weights"][r] > 0
    ids[batch["masked_positions"][r][w]] = batch["masked_ids"][r][w]
    rows.append((tuple(ids.tolist()), tuple(batch["token_type_ids"][r, :n].tolist())))
  return rows


def stored_rows(data_dir, split, indices) -> list[tuple]:
  _, source = records.open_split(data_dir, split)
  return [(tuple(source[i]["tokens"].tolist()), tuple(source[i]["token_type_ids"].tolist())) for i in indices]


# -------------------------------------------------------------------------------------------------
# Text.


def test_split_sentences_on_sample_prose():
  paragraph = " ".join(sample_lines()[:9])
  sentences = text.split_sentences(paragraph)
  assert sentences[:3] == ["CHAPTER 1.", "Loomings.", "Call me Ishmael."]
  assert "This is my substitute for pistol and ball." in sentences
  # "!" before a lower-case word is not a boundary.
  assert any("But look! here come more crowds" in s for s in sentences)
  assert sentences[-1].endswith("the face of And God said, Let there be light: and there was light.")
  # Wrapped lines are joined with single spaces.
  assert all("  " not in s and "\n" not in s for s in sentences)


def test_split_sentences_rules():
  split = text.split_sentences
  # Abbreviations, initials and lower-case continuations do not end sentences; numbers never start one.
  assert split("Mr. Smith met Dr. Jones at St. Paul's. They read J. R. R. Tolkien, e.g. The Hobbit.") == [
    "Mr. Smith met Dr. Jones at St. Paul's.",
    "They read J. R. R. Tolkien, e.g. The Hobbit.",
  ]
  line = sample_lines()[10]  # "On 12/31/1999 at 11:59:59 p.m. the price was ..."
  assert split(line) == [line]
  assert split("It rose 3.5%. 5 people came.") == ["It rose 3.5%. 5 people came."]
  # Quotes and brackets: a closing quote stays with its sentence, an opening one starts the next.
  assert split('"Really?" she asked. "Yes." (Quite.) Done') == [
    '"Really?" she asked.',
    '"Yes."',
    "(Quite.)",
    "Done",
  ]
  assert split("¿Dónde está el niño? ¡Mañana iremos a Peñíscola con Ángela!") == [
    "¿Dónde está el niño?",
    "¡Mañana iremos a Peñíscola con Ángela!",
  ]
  # CJK full stops end sentences without a following space.
  chinese = "".join(line for line in sample_lines() if line.startswith(("今天", "北京")))
  assert split(chinese) == [
    "今天天气很好，我们去公园散步吧！",
    "北京是中华人民共和国的首都，人口超过2000万。",
  ]
  assert split("他说：“好。”然后走了") == ["他说：“好。”", "然后走了"]
  assert split("   ") == []


def test_formats_on_sample_text():
  lines = sample_lines()
  nonblank = [line for line in lines if line.strip()]
  src = text.LocalTextSource(SAMPLE, format="bert")
  docs = list(src.documents())
  # One blank line inside the file; the whitespace-only last line is blank too.
  assert docs == [[line.strip() for line in lines[:9]], [line.strip() for line in lines[10:] if line.strip()]]

  docs = list(text.LocalTextSource(SAMPLE, format="lines").documents())
  assert len(docs) == len(nonblank)
  assert docs[0] == ["CHAPTER 1.", "Loomings."]

  docs = list(text.LocalTextSource(SAMPLE, format="paragraphs").documents())
  assert len(docs) == 2
  assert docs[0] == text.split_sentences(" ".join(lines[:9]))

  docs = list(text.LocalTextSource(SAMPLE, format="document").documents())
  assert len(docs) == 1 and docs[0] == [s for line in lines for s in text.split_sentences(line)]


def test_globs_bom_crlf_and_source_spec(tmp_path):
  lines = sample_lines()
  (tmp_path / "b.txt").write_bytes(("\r\n".join(lines[6:9]) + "\r\n").encode("utf-8"))
  (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines[:2]).encode("utf-8"))
  src = text.open_text_source(str(tmp_path / "*.txt"))
  assert isinstance(src, text.LocalTextSource) and src.format == "bert"
  assert [os.path.basename(p) for p in src.paths] == ["a.txt", "b.txt"]  # sorted
  docs = list(src.documents())
  assert docs == [lines[:2], lines[6:9]]  # BOM and \r gone; each file ends its last document
  both = text.open_text_source(f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}", format="lines")
  assert len(list(both.documents())) == 5
  fp = src.fingerprint()
  (tmp_path / "b.txt").write_text("changed", encoding="utf-8")
  assert text.LocalTextSource(str(tmp_path / "*.txt")).fingerprint()["sha256"] != fp["sha256"]


def test_text_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    text.LocalTextSource(tmp_path / "missing.txt")
  with pytest.raises(FileNotFoundError, match="matches no file"):
    text.LocalTextSource(str(tmp_path / "*.txt"))
  with pytest.raises(IsADirectoryError, match="is a directory"):
    text.LocalTextSource(tmp_path)
  with pytest.raises(ValueError, match="unknown text format 'csv'"):
    text.LocalTextSource(SAMPLE, format="csv")

  empty = tmp_path / "empty.txt"
  empty.write_text("\n   \n\t\n", encoding="utf-8")
  with pytest.raises(ValueError, match="no text in .*empty.txt"):
    list(text.LocalTextSource(empty).documents())

  bad = tmp_path / "latin1.txt"
  first = b"Call me Ishmael.\n"
  bad.write_bytes(first + "Loomings in Besançon.\n".encode("latin-1"))
  offset = len(first) + len("Loomings in Besan")
  with pytest.raises(
    ValueError, match=rf"latin1.txt' is not UTF-8: line 2, byte offset {offset} \(byte 0xe7\)"
  ):
    list(text.LocalTextSource(bad).documents())


# -------------------------------------------------------------------------------------------------
# Records.


def test_build_reads_back_what_was_written(built, tokenizer):
  data_dir, manifest = built
  assert (data_dir / records.MANIFEST).is_file()
  assert json.loads((data_dir / records.MANIFEST).read_text())["splits"] == manifest["splits"]
  assert manifest["features"] == ["tokens", "token_type_ids", "pair_label"]
  assert not any(".incomplete-" in p.name for p in data_dir.parent.iterdir())

  # The instances the build made, made again from the same inputs, equal the stored records in order.
  config = manifest["config"]
  src = text.LocalTextSource(SAMPLE, format="lines")
  held_out = records._validation_indices(src, config["validation"], config["seed"])
  n_docs = sum(1 for _ in src.documents())
  assert sum(map(held_out, range(n_docs))) == 4
  for split, keep in (("train", lambda i: not held_out(i)), ("validation", held_out)):
    counts = collections.Counter()
    expected = list(records._instances(src, tokenizer, config, split, keep, counts))
    _, source = records.open_split(data_dir, split)
    assert len(source) == len(expected) == manifest["splits"][split]["instances"]
    for i, want in enumerate(expected):
      got = source[i]
      assert set(got) == {"tokens", "token_type_ids", "pair_label"}
      assert got["tokens"].dtype == np.int32
      np.testing.assert_array_equal(got["tokens"], want["tokens"])
      np.testing.assert_array_equal(got["token_type_ids"], want["token_type_ids"])
      assert int(got["pair_label"]) == want["pair_label"]
      assert got["tokens"][0] == tokenizer.cls_id and got["tokens"][-1] == tokenizer.sep_id
      assert len(got["tokens"]) <= MAX_LEN
  # Held-out documents are whole documents: the two splits together hold every document once.
  assert manifest["splits"]["train"]["documents"] + manifest["splits"]["validation"]["documents"] == n_docs
  # The sample text spells out [CLS] and [MASK]; stored as [UNK], never as control tokens.
  _, source = records.open_split(data_dir, "train")
  for i in range(len(source)):
    tokens = source[i]["tokens"]
    assert (tokens[1:] != tokenizer.cls_id).all() and (tokens != tokenizer.mask_id).all()


def test_manifest_mismatch(tmp_path, tokenizer, built):
  data_dir = tmp_path / "data"
  first = build(data_dir, tokenizer, dupe_factor=1)
  stamp = (data_dir / records.MANIFEST).stat().st_mtime_ns
  assert build(data_dir, tokenizer, dupe_factor=1) == first  # reused, not rebuilt
  assert (data_dir / records.MANIFEST).stat().st_mtime_ns == stamp

  with pytest.raises(ValueError, match=r"(?s)max_seq_length: stored 64, wanted 48.*on_mismatch='rebuild'"):
    build(data_dir, tokenizer, dupe_factor=1, max_seq_length=48)
  other_vocab = Tokenizer(list(tokenizer.vocab[:2000]), source="a smaller vocab")
  with pytest.raises(ValueError, match="vocab_sha256: stored"):
    build(data_dir, other_vocab, dupe_factor=1)
  with pytest.raises(ValueError, match="validation: stored 4, wanted 0.25"):
    build(data_dir, tokenizer, dupe_factor=1, validation=0.25)

  rebuilt = build(data_dir, tokenizer, dupe_factor=1, max_seq_length=48, on_mismatch="rebuild")
  assert rebuilt["config"]["max_seq_length"] == 48
  assert records.read_manifest(data_dir)["config"]["max_seq_length"] == 48
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "data.lock"]  # old build, temporaries gone

  # The pipeline refuses data built for another length or vocabulary.
  vocab = pipeline.VocabInfo.from_tokenizer(tokenizer)
  with pytest.raises(ValueError, match="built with max_seq_length=48"):
    train_dataset(data_dir, vocab)
  small = pipeline.VocabInfo.from_tokenizer(Tokenizer(list(tokenizer.vocab), lowercase=False))
  with pytest.raises(ValueError, match="another vocabulary"):
    train_dataset(data_dir, small, max_seq_length=48)

  # A folder that is not ours is never overwritten.
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(FileNotFoundError, match="not a bert_jax pretraining dataset"):
    build(foreign, tokenizer)


def test_build_config_errors(tmp_path, tokenizer):
  with pytest.raises(ValueError, match="packing=True .* pair_task='nsp'"):
    build(tmp_path / "x", tokenizer, packing=True)
  with pytest.raises(ValueError, match="validation=1.5"):
    build(tmp_path / "x", tokenizer, validation=1.5)
  with pytest.raises(ValueError, match="validation=100 documents, but the source has only 40"):
    build(tmp_path / "x", tokenizer, validation=100)
  with pytest.raises(FileNotFoundError, match="no pretraining data"):
    records.open_split(tmp_path / "x", "train")
  assert list(tmp_path.iterdir()) == []


def test_interrupted_build_resumes_and_never_publishes_a_partial_dataset(
  tmp_path, tokenizer, built, monkeypatch
):
  """A crash in the third chunk (the validation split's) leaves no data_dir, only data_dir.partial-* with the
  finished chunks; the same command then builds what is missing, reusing those, and its records equal an
  uninterrupted build's."""
  from bert_jax.data import build as build_lib

  real = build_lib.chunk_instances
  calls = []

  def failing_at(k):
    def run(chunk, *args, **kwargs):
      calls.append((chunk.split, chunk.index))
      if len(calls) == k:
        raise RuntimeError("simulated crash while making instances")
      return real(chunk, *args, **kwargs)

    return run

  data_dir = tmp_path / "data"
  monkeypatch.setattr(build_lib, "chunk_instances", failing_at(3))
  with pytest.raises(
    ValueError,
    match=r"building chunk 0 of the validation split \(4 documents from document #\d+, which begins",
  ):
    build(data_dir, tokenizer)
  (partial,) = tmp_path.glob("data.partial-*")  # nothing that looks complete: no data_dir
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data.lock", partial.name]
  assert sorted(p.name for p in (partial / "shards").iterdir()) == [
    "train-000000.array_record",
    "train-000000.json",
    "train-000001.array_record",
    "train-000001.json",
  ]
  with pytest.raises(FileNotFoundError, match="no pretraining data"):
    records.open_split(data_dir, "train")

  calls.clear()
  monkeypatch.setattr(build_lib, "chunk_instances", failing_at(0))
  resumed = build(data_dir, tokenizer)
  assert calls == [("validation", 0)]  # the two train chunks are reused, not redone
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "data.lock"]
  reference_dir, reference = built
  assert resumed["splits"] == reference["splits"]
  for split in ("train", "validation"):
    _, got = records.open_split(data_dir, split)
    _, want = records.open_split(reference_dir, split)
    assert len(got) == len(want)
    for i in range(len(want)):
      np.testing.assert_array_equal(got[i]["tokens"], want[i]["tokens"])
      assert int(got[i]["pair_label"]) == int(want[i]["pair_label"])

  # A rebuild that fails keeps the previous good data.
  monkeypatch.setattr(build_lib, "chunk_instances", failing_at(1))
  calls.clear()
  with pytest.raises(ValueError, match="simulated crash"):
    build(data_dir, tokenizer, dupe_factor=3, on_mismatch="rebuild")
  assert records.read_manifest(data_dir) == resumed
  _, source = records.open_split(data_dir, "train")
  assert len(source) == resumed["splits"]["train"]["instances"]


# -------------------------------------------------------------------------------------------------
# Pipeline.


def test_batches_have_model_features(built, vocab, tokenizer):
  data_dir, _ = built
  batch = next(iter(train_dataset(data_dir, vocab, global_batch_size=8, process_count=2, process_index=1)))
  shapes = {k: (v.shape, v.dtype) for k, v in batch.items()}
  assert shapes == {
    "input_ids": ((4, MAX_LEN), np.int32),
    "attention_mask": ((4, MAX_LEN), np.int32),
    "token_type_ids": ((4, MAX_LEN), np.int32),
    "masked_positions": ((4, 10), np.int32),
    "masked_ids": ((4, 10), np.int32),
    "masked_weights": ((4, 10), np.float32),
    "nsp_labels": ((4,), np.int32),
  }
  lengths = batch["attention_mask"].sum(1)
  assert (batch["input_ids"][:, 0] == tokenizer.cls_id).all()
  for r, n in enumerate(lengths):
    assert (batch["input_ids"][r, n:] == tokenizer.pad_id).all()
    assert (batch["attention_mask"][r, :n] == 1).all()
    w = batch["masked_weights"][r] > 0
    assert 1 <= w.sum() <= 10
    assert (batch["masked_positions"][r][w] < n).all()
  assert set(np.unique(batch["nsp_labels"])) <= {0, 1}


def test_each_process_reads_its_own_shard(built, vocab):
  data_dir, manifest = built
  n = manifest["splits"]["train"]["instances"]
  per_process = n // 2
  seen = []
  for p in range(2):
    ds = train_dataset(data_dir, vocab, global_batch_size=2, process_index=p, process_count=2, num_epochs=1)
    rows = [row for batch in ds for row in unmasked_rows(batch)]
    assert len(rows) == per_process
    # Exactly the records p, p + 2, ... (the odd one out of an odd count is dropped on every process).
    assert collections.Counter(rows) == collections.Counter(
      stored_rows(data_dir, "train", range(p, 2 * per_process, 2))
    )
    seen.append(rows)
  assert collections.Counter(seen[0] + seen[1]) == collections.Counter(
    stored_rows(data_dir, "train", range(2 * per_process))
  )

  # Evaluation reads every record once across processes, in the same number of batches on each.
  n_val = manifest["splits"]["validation"]["instances"]
  per_process = []
  evaluated = []
  for p in range(2):
    ds = pipeline.make_eval_dataset(
      data_dir,
      "validation",
      global_batch_size=4,
      seed=0,
      masking=MASKING,
      vocab=vocab,
      max_seq_length=MAX_LEN,
      process_index=p,
      process_count=2,
    )
    batches = list(ds)
    per_process.append(len(batches))
    for batch in batches:
      assert batch["valid"].shape == (2,)
      for row, valid, weights in zip(unmasked_rows(batch), batch["valid"], batch["masked_weights"]):
        if valid:
          evaluated.append(row)
        else:
          assert not weights.any()
  assert per_process[0] == per_process[1] == math.ceil(math.ceil(n_val / 2) / 2)
  assert collections.Counter(evaluated) == collections.Counter(
    stored_rows(data_dir, "validation", range(n_val))
  )


def test_iterator_state_resumes_exactly(built, vocab):
  data_dir, _ = built
  ds = train_dataset(data_dir, vocab)
  it = iter(ds)
  take(it, 7)
  state = it.get_state()
  json.dumps(state)  # small and serializable
  expected = take(it, 15)  # crosses epoch boundaries (10 batches an epoch)

  resumed = iter(train_dataset(data_dir, vocab))
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 15), expected)

  # The whole stream is a function of the seed; another seed gives another stream.
  assert_batches_equal(
    take(iter(train_dataset(data_dir, vocab)), 3), take(iter(train_dataset(data_dir, vocab)), 3)
  )
  other = next(iter(train_dataset(data_dir, vocab, seed=4)))
  first = next(iter(train_dataset(data_dir, vocab)))
  assert not np.array_equal(other["input_ids"], first["input_ids"])


def test_iterator_state_through_orbax_checkpoint(built, vocab, tmp_path):
  jnp = pytest.importorskip("jax.numpy")
  from bert_jax.checkpointing import Checkpointer

  data_dir, _ = built
  it = iter(train_dataset(data_dir, vocab))
  take(it, 4)
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  state = {"w": jnp.arange(3.0)}
  ckpt.save(4, state, data_iterator=it)
  ckpt.wait()
  expected = take(it, 3)

  fresh = iter(train_dataset(data_dir, vocab))
  step, restored = ckpt.restore(state, data_iterator=fresh)
  ckpt.close()
  assert step == 4
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert_batches_equal(take(fresh, 3), expected)


def test_static_and_dynamic_masking_across_epochs(built, vocab):
  data_dir, _ = built

  # 32 records, 8 a batch, no shuffling: batches 0-3 are epoch 0, batches 4-7 the same records again.
  def epochs(dynamic, shuffle=False):
    ds = train_dataset(data_dir, vocab, rows=32, num_epochs=2, dynamic_masking=dynamic, shuffle=shuffle)
    batches = list(ds)
    assert len(batches) == 8
    return batches[:4], batches[4:]

  first, second = epochs(dynamic=False)
  assert_batches_equal(first, second)  # static: the very same masks every epoch

  first, second = epochs(dynamic=True)
  assert [unmasked_rows(b) for b in first] == [unmasked_rows(b) for b in second]  # same records
  assert any(not np.array_equal(a["masked_positions"], b["masked_positions"]) for a, b in zip(first, second))

  # With shuffling the order changes per epoch, but static masks stay with their record.
  first, second = epochs(dynamic=False, shuffle=True)
  rows_first = [r for b in first for r in unmasked_rows(b)]
  rows_second = [r for b in second for r in unmasked_rows(b)]
  assert rows_first != rows_second and sorted(rows_first) == sorted(rows_second)

  def masks(batches):
    out = {}
    for b in batches:
      for r, row in enumerate(unmasked_rows(b)):
        w = b["masked_weights"][r] > 0
        out.setdefault(row, set()).add((tuple(b["masked_positions"][r][w]), tuple(b["input_ids"][r])))
    return out

  assert masks(first) == masks(second)


def test_pipeline_argument_errors(built, vocab):
  data_dir, _ = built
  with pytest.raises(ValueError, match="global_batch_size=6 is not divisible by process_count=4"):
    train_dataset(data_dir, vocab, global_batch_size=6, process_count=4)
  with pytest.raises(ValueError, match="process_index=2; expected an integer in"):
    train_dataset(data_dir, vocab, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="fewer than one batch"):
    train_dataset(data_dir, vocab, global_batch_size=64, rows=32)
  with pytest.raises(ValueError, match="no split 'test'"):
    train_dataset(data_dir, vocab, split="test", seed=0)


# -------------------------------------------------------------------------------------------------
# A TFDS text source (a tiny dataset built here in array_record, as a prepared Wikipedia would be).


def test_tfds_text_source_to_packed_batches(tmp_path, tokenizer, vocab):
  tfds = pytest.importorskip("tensorflow_datasets")
  lines = sample_lines()
  articles = [
    {"title": "Loomings", "text": "\n".join(lines[0:6])},
    {"title": "Genesis", "text": "\n".join(lines[6:9])},
    {"title": "Numbers", "text": "\n".join(lines[10:16])},
    {"title": "Languages", "text": "\n".join(lines[16:30])},
  ]
  tfds_dir = tmp_path / "tfds"
  records.write_array_record_dataset(
    tfds_dir,
    "tiny_wiki",
    {"title": tfds.features.Text(), "text": tfds.features.Text()},
    {"train": lambda: articles},
    version="0.1.0",
    config="20230601.en",
  )
  # Named as a prepared Wikipedia is: name/config.
  src = text.open_text_source("tfds:tiny_wiki/20230601.en", data_dir=tfds_dir)
  assert isinstance(src, text.TfdsTextSource) and src.format == "document"
  docs = list(src.documents())
  assert docs == [[s for line in a["text"].split("\n") for s in text.split_sentences(line)] for a in articles]
  assert src.fingerprint()["records"] == 4

  data_dir = tmp_path / "packed"
  manifest = records.build_pretraining_data(
    data_dir,
    source=src,
    tokenizer=tokenizer,
    max_seq_length=MAX_LEN,
    pair_task="none",
    packing=True,
    dupe_factor=1,
    validation=1,
    seed=0,
  )
  assert manifest["features"] == ["tokens", "token_type_ids", "segment_ids", "position_ids"]
  assert manifest["config"]["source"]["kind"] == "tfds"
  n = manifest["splits"]["train"]["instances"]
  batch = next(iter(train_dataset(data_dir, vocab, global_batch_size=n, shuffle=False)))
  assert "nsp_labels" not in batch
  assert batch["segment_ids"].shape == batch["position_ids"].shape == (n, MAX_LEN)
  real = batch["attention_mask"] == 1
  assert (batch["segment_ids"][real] >= 1).all() and (batch["segment_ids"][~real] == 0).all()
  assert (batch["position_ids"][:, 0] == 0).all()

  with pytest.raises(KeyError, match="no field 'body'"):
    list(text.TfdsTextSource("tiny_wiki/20230601.en", data_dir=tfds_dir, field="body").documents())
  with pytest.raises(FileNotFoundError, match="array_record"):
    list(text.TfdsTextSource("no_such_corpus", data_dir=tfds_dir).documents())
  assert "tensorflow" not in sys.modules  # the whole path is TF-free
