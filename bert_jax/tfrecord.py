"""TFRecord files and the tf.train.Example records in them, read without TensorFlow.

A TFRecord file is a sequence of records, each framed as

    uint64 length (little-endian) | uint32 masked crc32c of those 8 bytes | data | uint32 masked crc32c of data

and a whole file may be compressed as one gzip (or zlib) stream. Pretraining data written by BERT's
create_pretraining_data.py (MLPerf's eval_10k among them) and TFDS's prepared copies are such files of
serialized `tensorflow.Example` protocol buffers. The framing and checksums are read here with crc32c.py;
the Example messages are decoded by the `protobuf` package (a dependency of tensorboardX and TFDS) from a
descriptor built at import in a private pool, so neither TensorFlow nor its .proto files are needed and
no other copy of the messages registered by a library can clash with it.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from bert_jax.crc32c import _unmask_crc, crc32c

__all__ = [
  "COMPRESSIONS",
  "Record",
  "TFRecordError",
  "feature_kind",
  "parse_example",
  "read_examples",
  "read_records",
]

COMPRESSIONS = ("auto", "none", "gzip", "zlib")
_HEADER = 12  # uint64 length + its masked crc
_FOOTER = 4


class TFRecordError(ValueError):
  pass


class Record(NamedTuple):
  index: int  # the record's number in its file, from 0
  offset: int  # byte offset of its header (in the decompressed stream when the file is compressed)
  data: bytes


# --- framing -----------------------------------------------------------------------------------


def _header_is_valid(header: bytes) -> bool:
  return len(header) == _HEADER and crc32c(header[:8]) == _unmask_crc(struct.unpack("<I", header[8:])[0])


def _open(path: str, compression: str) -> tuple[BinaryIO, str]:
  """The file's record stream, and how it is compressed ("none", "gzip" or "zlib")."""
  if compression not in COMPRESSIONS:
    raise ValueError(f"compression={compression!r}; expected one of {list(COMPRESSIONS)}")
  raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
  if compression == "auto":
    head = raw.read(_HEADER)
    raw.seek(0)
    # An uncompressed file opens with a header whose checksum holds; a gzip member opens with 1f 8b.
    if head and not _header_is_valid(head) and head[:2] == b"\x1f\x8b":
      compression = "gzip"
    else:
      compression = "none"
  if compression == "gzip":
    return gzip.GzipFile(fileobj=raw, mode="rb"), compression
  if compression == "zlib":
    return _ZlibReader(raw), compression
  return raw, compression


class _ZlibReader(io.RawIOBase):
  """A zlib stream (TF's ZLIB TFRecord option) read as a file."""

  def __init__(self, raw: BinaryIO):
    self._raw, self._inflate, self._buffer = raw, zlib.decompressobj(), b""

  def readable(self) -> bool:
    return True

  def readinto(self, b) -> int:
    while not self._buffer:
      chunk = self._raw.read(1 << 20)
      if not chunk:
        self._buffer = self._inflate.flush()
        break
      self._buffer = self._inflate.decompress(chunk)
    n = min(len(b), len(self._buffer))
    b[:n], self._buffer = self._buffer[:n], self._buffer[n:]
    return n

  def close(self) -> None:
    self._raw.close()
    super().close()


def read_records(
  path: str | os.PathLike, *, compression: str = "auto", verify_checksums: bool = True
) -> Iterator[Record]:
  """The records of one TFRecord file, in order, as (index, offset, data).

  compression: "auto" (gzip when the file is a gzip stream, else none), "none", "gzip" or "zlib".
  Raises TFRecordError naming the file, the record and its byte offset on a checksum mismatch or a file
  that ends inside a record.
  """
  path = os.fspath(path)
  stream, kind = _open(path, compression)
  where = "" if kind == "none" else f" of the {kind}-decompressed stream"
  try:
    index, offset = 0, 0
    while True:
      header = _read_exactly(stream, _HEADER, path, kind)
      if not header:
        return
      at = f"{path}: record {index} (byte offset {offset}{where})"
      if len(header) < _HEADER:
        raise TFRecordError(
          f"{at}: truncated: the file ends {len(header)} bytes into the 12-byte record header"
        )
      (length,) = struct.unpack("<Q", header[:8])
      if verify_checksums and not _header_is_valid(header):
        raise TFRecordError(
          f"{at}: the length field's checksum does not match (length read: {length}); the file is corrupt "
          "or not a TFRecord file"
        )
      body = _read_exactly(stream, length + _FOOTER, path, kind)
      if len(body) < length + _FOOTER:
        raise TFRecordError(
          f"{at}: truncated: the record holds {length} bytes plus a 4-byte checksum but the file ends "
          f"{len(body)} bytes after its header"
        )
      data = body[:length]
      if verify_checksums and crc32c(data) != _unmask_crc(struct.unpack("<I", body[length:])[0]):
        raise TFRecordError(f"{at}: the data checksum does not match: the {length}-byte record is corrupt")
      yield Record(index, offset, data)
      index += 1
      offset += _HEADER + length + _FOOTER
  finally:
    stream.close()


def _read_exactly(stream: BinaryIO, n: int, path: str, kind: str) -> bytes:
  try:
    chunks, got = [], 0
    while got < n:
      chunk = stream.read(n - got)
      if not chunk:
        break
      chunks.append(chunk)
      got += len(chunk)
    return b"".join(chunks)
  except (OSError, EOFError, zlib.error) as e:  # a damaged gzip/zlib stream
    raise TFRecordError(f"{path}: not a readable {kind} stream ({e})") from None


# --- tf.train.Example --------------------------------------------------------------------------


def _example_classes():
  """tensorflow.Example and its parts (tensorflow/core/example/{example,feature}.proto), built as a
  descriptor in a private pool."""
  f = descriptor_pb2.FileDescriptorProto(
    name="bert_jax_tf_example.proto", package="tensorflow", syntax="proto3"
  )
  T = descriptor_pb2.FieldDescriptorProto
  repeated, optional = T.LABEL_REPEATED, T.LABEL_OPTIONAL

  def message(name, *fields, nested=()):
    m = f.message_type.add(name=name)
    for field_name, number, label, type_, type_name in fields:
      m.field.add(name=field_name, number=number, label=label, type=type_, type_name=type_name or None)
    for n in nested:
      m.nested_type.add().CopyFrom(n)
    return m

  message("BytesList", ("value", 1, repeated, T.TYPE_BYTES, ""))
  message("FloatList", ("value", 1, repeated, T.TYPE_FLOAT, ""))
  message("Int64List", ("value", 1, repeated, T.TYPE_INT64, ""))
  feature = message(
    "Feature",
    ("bytes_list", 1, optional, T.TYPE_MESSAGE, ".tensorflow.BytesList"),
    ("float_list", 2, optional, T.TYPE_MESSAGE, ".tensorflow.FloatList"),
    ("int64_list", 3, optional, T.TYPE_MESSAGE, ".tensorflow.Int64List"),
  )
  feature.oneof_decl.add(name="kind")
  for field in feature.field:
    field.oneof_index = 0
  entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
  entry.options.map_entry = True
  entry.field.add(name="key", number=1, label=optional, type=T.TYPE_STRING)
  entry.field.add(
    name="value", number=2, label=optional, type=T.TYPE_MESSAGE, type_name=".tensorflow.Feature"
  )
  message(
    "Features", ("feature", 1, repeated, T.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry"), nested=[entry]
  )
  message("Example", ("features", 1, optional, T.TYPE_MESSAGE, ".tensorflow.Features"))
  pool = descriptor_pool.DescriptorPool()
  pool.Add(f)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


_Example = _example_classes()
_KINDS = {"int64_list": np.int64, "float_list": np.float32}


def parse_example(data: bytes, *, where: str = "record") -> dict[str, np.ndarray | list[bytes]]:
  """A serialized tf.train.Example -> {feature name: values}: int64_list as an int64 array, float_list as
  a float32 array, bytes_list as a list of bytes (packed and unpacked encodings alike). A feature with no
  kind set is an empty float32 array, as TensorFlow reads it."""
  example = _Example()
  try:
    example.ParseFromString(data)
  except DecodeError as e:
    raise TFRecordError(f"{where}: not a tf.train.Example ({e})") from None
  out: dict[str, np.ndarray | list[bytes]] = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
      out[name] = list(feature.bytes_list.value)
    elif kind is None:
      out[name] = np.zeros((0,), np.float32)
    else:
      values = getattr(feature, kind).value
      out[name] = np.fromiter(values, _KINDS[kind], count=len(values))
  return out


def feature_kind(value) -> str:
  """The tf.train.Feature kind a parsed value came from."""
  if isinstance(value, list):
    return "bytes_list"
  return "int64_list" if value.dtype == np.int64 else "float_list"


def read_examples(
  paths: str | os.PathLike | Iterable[str | os.PathLike],
  *,
  compression: str = "auto",
  verify_checksums: bool = True,
) -> Iterator[tuple[str, Record, dict]]:
  """(file, record, parsed Example) for every record of the files, in order."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  for path in paths:
    path = os.fspath(path)
    for record in read_records(path, compression=compression, verify_checksums=verify_checksums):
      where = f"{path}: record {record.index} (byte offset {record.offset})"
      yield path, record, parse_example(record.data, where=where)
