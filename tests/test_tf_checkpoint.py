"""The TF-free checkpoint reader against checkpoints written by real TensorFlow.

The fixture (tests/data/google_bert_tiny, see its README) holds the same random weights saved by
HuggingFace (safetensors) and by TensorFlow under Google's names, so every value read here is
checked against an independent writer, bit for bit.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from bert_jax import tf_checkpoint
from bert_jax.tf_checkpoint import TFCheckpointError, list_tf_variables, read_tf_checkpoint

FIXTURE = pathlib.Path(__file__).parent / "data" / "google_bert_tiny"
PREFIX = FIXTURE / "bert_model.ckpt"
DATA = FIXTURE / "bert_model.ckpt.data-00000-of-00001"
DTYPES = FIXTURE / "dtypes"
NUM_LAYERS = 2


def google_names() -> dict[str, tuple[str, bool]]:
  """Google TF name -> (HuggingFace name, whether TF holds the transpose)."""
  names = {
    "bert/embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", False),
    "bert/embeddings/token_type_embeddings": ("bert.embeddings.token_type_embeddings.weight", False),
    "bert/embeddings/position_embeddings": ("bert.embeddings.position_embeddings.weight", False),
    "bert/embeddings/LayerNorm/gamma": ("bert.embeddings.LayerNorm.weight", False),
    "bert/embeddings/LayerNorm/beta": ("bert.embeddings.LayerNorm.bias", False),
    "bert/pooler/dense/kernel": ("bert.pooler.dense.weight", True),
    "bert/pooler/dense/bias": ("bert.pooler.dense.bias", False),
    "cls/predictions/transform/dense/kernel": ("cls.predictions.transform.dense.weight", True),
    "cls/predictions/transform/dense/bias": ("cls.predictions.transform.dense.bias", False),
    "cls/predictions/transform/LayerNorm/gamma": ("cls.predictions.transform.LayerNorm.weight", False),
    "cls/predictions/transform/LayerNorm/beta": ("cls.predictions.transform.LayerNorm.bias", False),
    "cls/predictions/output_bias": ("cls.predictions.bias", False),
    "cls/seq_relationship/output_weights": ("cls.seq_relationship.weight", False),
    "cls/seq_relationship/output_bias": ("cls.seq_relationship.bias", False),
  }
  for i in range(NUM_LAYERS):
    tf, hf = f"bert/encoder/layer_{i}/", f"bert.encoder.layer.{i}."
    for tf_part, hf_part in [
      ("attention/self/query", "attention.self.query"),
      ("attention/self/key", "attention.self.key"),
      ("attention/self/value", "attention.self.value"),
      ("attention/output/dense", "attention.output.dense"),
      ("intermediate/dense", "intermediate.dense"),
      ("output/dense", "output.dense"),
    ]:
      names[f"{tf}{tf_part}/kernel"] = (f"{hf}{hf_part}.weight", True)
      names[f"{tf}{tf_part}/bias"] = (f"{hf}{hf_part}.bias", False)
    for tf_part, hf_part in [
      ("attention/output/LayerNorm", "attention.output.LayerNorm"),
      ("output/LayerNorm", "output.LayerNorm"),
    ]:
      names[f"{tf}{tf_part}/gamma"] = (f"{hf}{hf_part}.weight", False)
      names[f"{tf}{tf_part}/beta"] = (f"{hf}{hf_part}.bias", False)
  return names


@pytest.fixture(scope="module")
def hf_weights() -> dict[str, np.ndarray]:
  return load_file(str(FIXTURE / "hf" / "model.safetensors"))


@pytest.fixture(scope="module")
def everything() -> dict[str, np.ndarray]:
  return read_tf_checkpoint(PREFIX)


def is_weight(name: str) -> bool:
  return not name.endswith(("/adam_m", "/adam_v")) and name != "global_step"


def copy_fixture(dst: pathlib.Path, src: pathlib.Path = FIXTURE) -> pathlib.Path:
  dst.mkdir(parents=True, exist_ok=True)
  for f in src.iterdir():
    if f.is_file() and (f.name.startswith(("bert_model.ckpt", "model.ckpt")) or f.name == "checkpoint"):
      shutil.copy(f, dst / f.name)
  return dst


# --- the BERT checkpoint ---------------------------------------------------------------------


def test_every_google_weight_matches_huggingface(everything, hf_weights):
  expected = google_names()
  # Every tensor in HF's file is accounted for, so nothing in the map was left untested.
  assert sorted(hf for hf, _ in expected.values()) == sorted(hf_weights)
  assert sorted(n for n in everything if is_weight(n)) == sorted(expected)
  for tf_name, (hf_name, transposed) in expected.items():
    want = hf_weights[hf_name].T if transposed else hf_weights[hf_name]
    got = everything[tf_name]
    assert got.dtype == np.float32, tf_name
    assert got.shape == want.shape, tf_name
    np.testing.assert_array_equal(got, want, err_msg=tf_name)


def test_layouts_are_googles(everything):
  # (in, out) kernels: the intermediate kernel is (hidden, intermediate), not torch's (64, 32).
  assert everything["bert/encoder/layer_1/intermediate/dense/kernel"].shape == (32, 64)
  assert everything["bert/encoder/layer_1/output/dense/kernel"].shape == (64, 32)
  assert everything["cls/seq_relationship/output_weights"].shape == (2, 32)
  assert everything["cls/predictions/output_bias"].shape == (120,)


def test_optimizer_slots_and_global_step(everything):
  weights = [n for n in everything if is_weight(n)]
  assert len(everything) == 3 * len(weights) + 1
  for name in weights:
    w = everything[name]
    np.testing.assert_array_equal(everything[name + "/adam_m"], w / np.float32(-4), err_msg=name)
    np.testing.assert_array_equal(everything[name + "/adam_v"], w * w, err_msg=name)
  step = everything["global_step"]
  assert step.dtype == np.int64 and step.shape == () and int(step) == 12345


def test_list_matches_read_and_needs_no_data(everything, tmp_path):
  copy = copy_fixture(tmp_path)
  (copy / DATA.name).unlink()
  listed = list_tf_variables(copy / "bert_model.ckpt")
  assert list(listed) == list(everything)
  for name, (shape, dtype) in listed.items():
    assert shape == everything[name].shape and dtype == everything[name].dtype, name
  assert listed["global_step"] == ((), np.dtype(np.int64))
  assert listed["bert/embeddings/word_embeddings/adam_v"].shape == (120, 32)


def test_name_filter_skips_slots_without_reading_them(everything, tmp_path):
  # Garble every slot's bytes: reading everything now fails its checksum, reading with the filter
  # must not touch them.
  copy = copy_fixture(tmp_path)
  index = tf_checkpoint._Bundle(copy / "bert_model.ckpt").entries
  with open(copy / DATA.name, "r+b") as f:
    for name, entry in index.items():
      if not is_weight(name):
        f.seek(entry.offset)
        f.write(b"\xff" * entry.size)
  with pytest.raises(TFCheckpointError, match="checksum mismatch for tensor"):
    read_tf_checkpoint(copy)
  weights = read_tf_checkpoint(copy, names=is_weight)
  assert sorted(weights) == sorted(google_names())
  for name, value in weights.items():
    np.testing.assert_array_equal(value, everything[name])
  assert list(list_tf_variables(copy, names=is_weight)) == list(weights)


def test_name_list(everything):
  got = read_tf_checkpoint(PREFIX, names=["global_step", "bert/pooler/dense/bias"])
  assert list(got) == ["global_step", "bert/pooler/dense/bias"]
  np.testing.assert_array_equal(got["bert/pooler/dense/bias"], everything["bert/pooler/dense/bias"])
  with pytest.raises(KeyError, match="bert/pooler/dense/weight"):
    read_tf_checkpoint(PREFIX, names=["bert/pooler/dense/weight"])
  with pytest.raises(TypeError, match="single string"):
    read_tf_checkpoint(PREFIX, names="global_step")


@pytest.mark.parametrize("form", [str(PREFIX), PREFIX, str(FIXTURE), FIXTURE, f"{PREFIX}.index", str(DATA)])
def test_path_forms(form, everything):
  got = read_tf_checkpoint(form, names=["bert/embeddings/LayerNorm/gamma"])
  np.testing.assert_array_equal(
    got["bert/embeddings/LayerNorm/gamma"], everything["bert/embeddings/LayerNorm/gamma"]
  )
  assert list(list_tf_variables(form)) == list(everything)


def test_directory_with_several_checkpoints(tmp_path, everything):
  copy = copy_fixture(tmp_path)
  for f in list(copy.iterdir()):
    if f.name.startswith("bert_model.ckpt"):
      shutil.copy(f, copy / f.name.replace("bert_model.ckpt", "model.ckpt-100"))
  # TF's `checkpoint` state file says which is current.
  assert tf_checkpoint.find_checkpoint_prefix(copy) == str(copy / "bert_model.ckpt")
  assert list(read_tf_checkpoint(copy, names=is_weight)) == [n for n in everything if is_weight(n)]
  # An absolute path from the machine that trained it still finds the checkpoint beside the file.
  (copy / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/run/model.ckpt-100"\n')
  assert tf_checkpoint.find_checkpoint_prefix(copy) == str(copy / "model.ckpt-100")
  (copy / "checkpoint").unlink()
  with pytest.raises(
    TFCheckpointError, match=r"2 checkpoints \(bert_model.ckpt.index, model.ckpt-100.index\)"
  ):
    read_tf_checkpoint(copy)


# --- errors ----------------------------------------------------------------------------------


def test_missing_index(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nope\.ckpt\.index: no such file"):
    read_tf_checkpoint(tmp_path / "nope.ckpt")
  with pytest.raises(
    FileNotFoundError, match=rf"{re.escape(str(tmp_path))}: no TensorFlow checkpoint here .*\*\.index"
  ):
    list_tf_variables(tmp_path)


def test_missing_data_shard(tmp_path):
  copy = copy_fixture(tmp_path, DTYPES)
  (copy / "model.ckpt.data-00001-of-00002").unlink()
  # Listing needs only the index; tensors in shard 0 still read.
  assert "int8" in list_tf_variables(copy)
  assert read_tf_checkpoint(copy, names=["int32"])["int32"].shape == (2, 2)
  with pytest.raises(
    FileNotFoundError, match=r"model\.ckpt\.data-00001-of-00002: no such file \(expected data shard 1 of 2"
  ):
    read_tf_checkpoint(copy, names=["int8"])


def test_not_an_sstable(tmp_path):
  (tmp_path / "model.ckpt.index").write_text('{"this": "is json", "padding": "' + "x" * 64 + '"}')
  with pytest.raises(
    TFCheckpointError,
    match=r"model\.ckpt\.index: not a TensorFlow checkpoint index \(expected an SSTable ending in magic number 0xdb4775248b80fb57",
  ):
    list_tf_variables(tmp_path / "model.ckpt")
  (tmp_path / "model.ckpt.index").write_text("{}")
  with pytest.raises(TFCheckpointError, match=r"model\.ckpt\.index: 2 bytes is too short"):
    list_tf_variables(tmp_path / "model.ckpt.index")


def test_corrupt_index_block(tmp_path):
  copy = copy_fixture(tmp_path)
  index = bytearray((copy / "bert_model.ckpt.index").read_bytes())
  index[100] ^= 0x01  # inside the first data block, which holds the tensor entries
  (copy / "bert_model.ckpt.index").write_bytes(bytes(index))
  with pytest.raises(
    TFCheckpointError, match=r"bert_model\.ckpt\.index: checksum mismatch in block at offset 0"
  ):
    list_tf_variables(copy)


def test_truncated_data_file(tmp_path):
  copy = copy_fixture(tmp_path)
  data = copy / DATA.name
  size = data.stat().st_size
  with open(data, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(
    TFCheckpointError,
    match=rf"{DATA.name}: truncated: tensor '[^']+' needs bytes \d+ to \d+ but the file has {size // 2}",
  ):
    read_tf_checkpoint(copy)


def test_corrupt_data_file(tmp_path, everything):
  copy = copy_fixture(tmp_path)
  entry = tf_checkpoint._Bundle(copy).entries["bert/pooler/dense/bias"]
  with open(copy / DATA.name, "r+b") as f:
    f.seek(entry.offset)
    f.write(b"\x00\x00\x80\x3f")  # 1.0
  with pytest.raises(
    TFCheckpointError, match=rf"{DATA.name}: checksum mismatch for tensor 'bert/pooler/dense/bias'"
  ):
    read_tf_checkpoint(copy, names=["bert/pooler/dense/bias"])
  got = read_tf_checkpoint(copy, names=["bert/pooler/dense/bias"], verify_checksums=False)
  assert got["bert/pooler/dense/bias"][0] == 1.0
  np.testing.assert_array_equal(got["bert/pooler/dense/bias"][1:], everything["bert/pooler/dense/bias"][1:])


# --- dtypes, shards and tensors the reader refuses --------------------------------------------

READABLE = {
  "bfloat16": np.array([[1.5, -2.25, 0.0078125], [256.0, -0.5, 3.0]], dtype=ml_dtypes.bfloat16),
  "float16": np.array([0.5, -1.25, 65504.0], dtype=np.float16),
  "float64": np.array([1.0 / 3.0, -2.5e300], dtype=np.float64),
  "int32": np.array([[-2147483648, 2147483647], [0, -1]], dtype=np.int32),
  "nested/scope/int64": np.array(2**40 + 3, dtype=np.int64),
  "bool": np.array([True, False, True]),
  "int8": np.array([-128, 127, 0], dtype=np.int8),
  "uint8": np.array([0, 255, 7], dtype=np.uint8),
  "int16": np.array([-32768, 32767], dtype=np.int16),
  "float32_scalar": np.array(-7.25, dtype=np.float32),
  "float32_empty": np.zeros((0, 4), dtype=np.float32),
}


def test_dtypes_across_two_shards():
  got = read_tf_checkpoint(DTYPES, names=READABLE)
  assert sorted(got) == sorted(READABLE)
  for name, want in READABLE.items():
    assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
    np.testing.assert_array_equal(got[name], want, err_msg=name)
  shards = {e.shard_id for e in tf_checkpoint._Bundle(DTYPES).entries.values()}
  assert shards == {0, 1}


def test_unsupported_tensors_are_listed_but_refused():
  listed = list_tf_variables(DTYPES)
  assert listed["unsupported/string"] == ((), "string")
  assert listed["unsupported/partitioned"] == ((4, 2), np.dtype(np.float32))
  assert listed["bfloat16"] == ((2, 3), np.dtype(ml_dtypes.bfloat16))
  # Slices of a partitioned variable have binary keys of their own; they are not tensors to list.
  assert sorted(listed) == sorted([*READABLE, "unsupported/string", "unsupported/partitioned"])
  with pytest.raises(
    TFCheckpointError, match=r"model\.ckpt\.index: tensor 'unsupported/string' has dtype string"
  ):
    read_tf_checkpoint(DTYPES, names=["unsupported/string"])
  with pytest.raises(
    TFCheckpointError, match=r"tensor 'unsupported/partitioned' is a partitioned variable saved as 2 slices"
  ):
    read_tf_checkpoint(DTYPES, names=["unsupported/partitioned"])
  with pytest.raises(TFCheckpointError, match="pass names= to read the other tensors"):
    read_tf_checkpoint(DTYPES)


# --- SSTable layouts TF's small fixtures do not produce -------------------------------------
# TF packs an index into 256 KiB blocks, so a real BERT index is one data block. These tests
# re-pack the fixture's real entries into many small blocks (the layout of a checkpoint with
# thousands of variables), and mark blocks compressed, with a minimal SSTable writer.

MAGIC = 0xDB4775248B80FB57


def varint(n: int) -> bytes:
  out = bytearray()
  while True:
    out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
    n >>= 7
    if not n:
      return bytes(out)


def mask(crc: int) -> int:
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def block(entries, restart_interval: int) -> bytes:
  out, restarts, prev = bytearray(), [], b""
  for i, (key, value) in enumerate(entries):
    shared = 0
    if i % restart_interval == 0:
      restarts.append(len(out))
    else:
      while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
        shared += 1
    out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
    prev = key
  return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def write_table(path, entries, per_block: int, block_type: int = 0) -> None:
  out = bytearray()

  def add(contents: bytes, kind: int = 0) -> bytes:
    handle = varint(len(out)) + varint(len(contents))
    out.extend(
      contents + bytes([kind]) + struct.pack("<I", mask(tf_checkpoint.crc32c(contents + bytes([kind]))))
    )
    return handle

  index = []
  for start in range(0, len(entries), per_block):
    chunk = entries[start : start + per_block]
    index.append((chunk[-1][0], add(block(chunk, 3), block_type)))
  meta = add(block([], 1))
  top = add(block(index, 1))
  out += (meta + top).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
  pathlib.Path(path).write_bytes(bytes(out))


@pytest.fixture(scope="module")
def tf_entries():
  return list(tf_checkpoint._table_entries(f"{PREFIX}.index"))


def test_many_small_blocks(tmp_path, tf_entries, everything):
  copy = copy_fixture(tmp_path)
  write_table(copy / "bert_model.ckpt.index", tf_entries, per_block=7)
  assert list_tf_variables(copy) == list_tf_variables(PREFIX)
  got = read_tf_checkpoint(copy)
  assert list(got) == list(everything)
  for name in everything:
    np.testing.assert_array_equal(got[name], everything[name])


def test_compressed_block_refused(tmp_path, tf_entries):
  write_table(tmp_path / "x.ckpt.index", tf_entries, per_block=50, block_type=1)
  with pytest.raises(TFCheckpointError, match=r"x\.ckpt\.index: block at offset 0 is snappy-compressed"):
    list_tf_variables(tmp_path / "x.ckpt")


def test_big_endian_refused(tmp_path, tf_entries):
  assert tf_entries[0][0] == b""
  header = tf_entries[0][1] + b"\x10\x01"  # endianness = BIG
  write_table(tmp_path / "x.ckpt.index", [(b"", header), *tf_entries[1:]], per_block=50)
  with pytest.raises(TFCheckpointError, match=r"x\.ckpt\.index: written big-endian"):
    list_tf_variables(tmp_path / "x.ckpt")


# --- crc32c ----------------------------------------------------------------------------------


def slow_crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def test_crc32c():
  # Check values from RFC 3720 (iSCSI), appendix B.4.
  assert tf_checkpoint.crc32c(b"123456789") == 0xE3069283
  assert tf_checkpoint.crc32c(bytes(32)) == 0x8A9136AA
  assert tf_checkpoint.crc32c(b"\xff" * 32) == 0x62A8AB43
  assert tf_checkpoint.crc32c(bytes(range(32))) == 0x46DD794E
  rng = np.random.default_rng(0)
  # Lengths around the lane and word boundaries of the vectorised path.
  for n in [0, 1, 3, 255, 256, 257, 1023, 1024, 1027, 4099, 20001]:
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert tf_checkpoint.crc32c(data) == slow_crc32c(data), n
