"""The TF-free TFRecord reader against an independent writer.

Records are framed by tensorboardX's RecordWriter (its own crc32c), and the tf.train.Example messages are
serialized by protobuf from a descriptor built here from TensorFlow's example.proto / feature.proto, in
its packed and unpacked encodings, so neither the framing nor the message layout comes from bert_jax.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorboardX.record_writer import RecordWriter

from bert_jax import tfrecord
from bert_jax.tfrecord import TFRecordError


def example_class(packed: bool):
  """tensorflow.Example from TensorFlow's .proto definitions; `packed=False` gives the unpacked (proto2-style)
  encoding of repeated numbers, which parsers must accept too."""
  F = descriptor_pb2.FieldDescriptorProto
  proto = descriptor_pb2.FileDescriptorProto(name="test_example.proto", package="tensorflow", syntax="proto3")
  for name, kind in (("BytesList", F.TYPE_BYTES), ("FloatList", F.TYPE_FLOAT), ("Int64List", F.TYPE_INT64)):
    field = proto.message_type.add(name=name).field.add(
      name="value", number=1, label=F.LABEL_REPEATED, type=kind
    )
    if kind != F.TYPE_BYTES:
      field.options.packed = packed
  feature = proto.message_type.add(name="Feature")
  feature.oneof_decl.add(name="kind")
  for number, name in enumerate(("bytes_list", "float_list", "int64_list"), 1):
    type_name = ".tensorflow." + {"bytes_list": "BytesList", "float_list": "FloatList"}.get(name, "Int64List")
    feature.field.add(
      name=name,
      number=number,
      label=F.LABEL_OPTIONAL,
      type=F.TYPE_MESSAGE,
      type_name=type_name,
      oneof_index=0,
    )
  features = proto.message_type.add(name="Features")
  entry = features.nested_type.add(name="FeatureEntry")
  entry.options.map_entry = True
  entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
  entry.field.add(
    name="value", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE, type_name=".tensorflow.Feature"
  )
  features.field.add(
    name="feature",
    number=1,
    label=F.LABEL_REPEATED,
    type=F.TYPE_MESSAGE,
    type_name=".tensorflow.Features.FeatureEntry",
  )
  proto.message_type.add(name="Example").field.add(
    name="features", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE, type_name=".tensorflow.Features"
  )
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def serialize(values: dict, packed: bool = True) -> bytes:
  example = example_class(packed)()
  for name, value in values.items():
    feature = example.features.feature[name]
    if isinstance(value, list) and value and isinstance(value[0], bytes):
      feature.bytes_list.value.extend(value)
    elif np.asarray(value).dtype.kind == "f":
      feature.float_list.value.extend(np.asarray(value).tolist())
    else:
      feature.int64_list.value.extend(np.asarray(value).tolist())
  return example.SerializeToString()


def write_records(path: pathlib.Path, records: list[bytes]) -> list[int]:
  """Writes with tensorboardX; returns each record's byte offset."""
  writer = RecordWriter(str(path))
  offsets, at = [], 0
  for data in records:
    writer.write(data)
    offsets.append(at)
    at += 12 + len(data) + 4
  writer.close()
  return offsets


@pytest.fixture
def records() -> list[bytes]:
  rng = np.random.default_rng(0)
  return [rng.bytes(int(n)) for n in (0, 1, 7, 300, 1000)] + [b"last"]


def test_records_match_the_writer(tmp_path, records):
  path = tmp_path / "data.tfrecord"
  offsets = write_records(path, records)
  got = list(tfrecord.read_records(path))
  assert [r.data for r in got] == records
  assert [r.index for r in got] == list(range(len(records)))
  assert [r.offset for r in got] == offsets
  assert list(tfrecord.read_records(path, compression="none")) == got


def test_empty_file(tmp_path):
  (tmp_path / "empty").write_bytes(b"")
  assert list(tfrecord.read_records(tmp_path / "empty")) == []


def test_gzip_and_zlib_streams(tmp_path, records):
  plain = tmp_path / "data.tfrecord"
  write_records(plain, records)
  (tmp_path / "data.gz").write_bytes(gzip.compress(plain.read_bytes()))
  (tmp_path / "data.zlib").write_bytes(zlib.compress(plain.read_bytes()))
  assert [r.data for r in tfrecord.read_records(tmp_path / "data.gz")] == records  # detected
  assert [r.data for r in tfrecord.read_records(tmp_path / "data.gz", compression="gzip")] == records
  assert [r.data for r in tfrecord.read_records(tmp_path / "data.zlib", compression="zlib")] == records
  with pytest.raises(ValueError, match="compression='lz4'"):
    list(tfrecord.read_records(plain, compression="lz4"))


@pytest.mark.parametrize("packed", [True, False])
def test_example_features(packed):
  values = {
    "ids": np.array([0, 1, -5, 2**40, 30521], np.int64),
    "weights": np.array([1.0, 0.0, 0.25, -3.5], np.float32),
    "text": [b"hello", b"", b"\xff\x00bytes"],
    "one": np.array([7], np.int64),
  }
  data = serialize(values, packed)
  if not packed:  # the unpacked encoding really is another byte string
    assert data != serialize(values, True)
  got = tfrecord.parse_example(data)
  assert sorted(got) == sorted(values)
  for name in ("ids", "weights", "one"):
    assert got[name].dtype == values[name].dtype
    np.testing.assert_array_equal(got[name], values[name])
  assert got["text"] == values["text"]


def test_empty_lists_and_unset_kind():
  example = example_class(True)()
  example.features.feature["ints"].int64_list.SetInParent()
  example.features.feature["unset"].SetInParent()
  got = tfrecord.parse_example(example.SerializeToString())
  assert got["ints"].dtype == np.int64 and got["ints"].shape == (0,)
  assert got["unset"].dtype == np.float32 and got["unset"].shape == (0,)


def test_read_examples_over_files(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  write_records(a, [serialize({"x": np.array([i])}) for i in range(3)])
  write_records(b, [serialize({"x": np.array([10])})])
  got = [(p, r.index, int(ex["x"][0])) for p, r, ex in tfrecord.read_examples([a, b])]
  assert got == [(str(a), 0, 0), (str(a), 1, 1), (str(a), 2, 2), (str(b), 0, 10)]


# --- bad input -----------------------------------------------------------------------------------


def test_corrupt_data_byte_names_file_record_and_offset(tmp_path, records):
  path = tmp_path / "data.tfrecord"
  offsets = write_records(path, records)
  raw = bytearray(path.read_bytes())
  raw[offsets[3] + 12 + 100] ^= 0x01  # inside record 3's data
  path.write_bytes(bytes(raw))
  reader = tfrecord.read_records(path)
  assert [next(reader).data for _ in range(3)] == records[:3]  # the records before it read fine
  with pytest.raises(TFRecordError, match=rf"{path}: record 3 \(byte offset {offsets[3]}\).*data checksum"):
    next(reader)
  assert list(tfrecord.read_records(path, verify_checksums=False))[3].data != records[3]


def test_corrupt_length_names_record(tmp_path, records):
  path = tmp_path / "data.tfrecord"
  offsets = write_records(path, records)
  raw = bytearray(path.read_bytes())
  raw[offsets[2]] ^= 0x04
  path.write_bytes(bytes(raw))
  with pytest.raises(TFRecordError, match=rf"record 2 \(byte offset {offsets[2]}\).*length field's checksum"):
    list(tfrecord.read_records(path))


@pytest.mark.parametrize("cut", [5, 12 + 400, 16])
def test_truncated_file_names_record(tmp_path, records, cut):
  path = tmp_path / "data.tfrecord"
  offsets = write_records(path, records)
  path.write_bytes(path.read_bytes()[: offsets[4] + cut])
  with pytest.raises(TFRecordError, match=rf"{path}: record 4 \(byte offset {offsets[4]}\): truncated"):
    list(tfrecord.read_records(path))


def test_corrupt_gzip_names_compressed_stream(tmp_path, records):
  plain = tmp_path / "data.tfrecord"
  offsets = write_records(plain, records)
  raw = bytearray(plain.read_bytes())
  raw[offsets[4] + 12 + 3] ^= 0x10
  (tmp_path / "data.gz").write_bytes(gzip.compress(bytes(raw)))
  with pytest.raises(TFRecordError, match=r"record 4 \(byte offset \d+ of the gzip-decompressed stream\)"):
    list(tfrecord.read_records(tmp_path / "data.gz"))


def test_not_an_example(tmp_path):
  path = tmp_path / "data.tfrecord"
  write_records(path, [serialize({"x": np.array([1])}), b"\x0a\xff\xff"])
  with pytest.raises(TFRecordError, match=rf"{path}: record 1 \(byte offset \d+\): not a tf.train.Example"):
    list(tfrecord.read_examples(path))
