"""Decodes the `.index` file of a TensorFlow V2 checkpoint: an SSTable (the LevelDB table layout) whose
values are BundleHeaderProto / BundleEntryProto messages, read straight from the protobuf wire format.

tf_checkpoint.py builds on these helpers to list and read tensors; see its docstring for the format as a whole.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from bert_jax.crc32c import _unmask_crc, crc32c


class TFCheckpointError(ValueError):
  """A checkpoint file is malformed, or holds something this reader cannot turn into numpy."""


_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic
_BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c


# --- protobuf wire format and varints --------------------------------------------------------


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
  result = shift = 0
  while True:
    if pos >= len(buf) or shift > 63:
      raise TFCheckpointError(f"{where}: truncated or overlong varint")
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def _signed64(value: int) -> int:
  # int32/int64 fields carry negatives as 10-byte two's complement varints.
  return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(buf: bytes, where: str) -> Iterator[tuple[int, int | bytes]]:
  """Yields (field number, value) pairs; varints and fixed ints as int, length-delimited as bytes."""
  pos = 0
  while pos < len(buf):
    key, pos = _varint(buf, pos, where)
    field, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, pos = _varint(buf, pos, where)
    elif wire_type == 1:
      if pos + 8 > len(buf):
        raise TFCheckpointError(f"{where}: truncated protobuf")
      value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
    elif wire_type == 2:
      length, pos = _varint(buf, pos, where)
      if pos + length > len(buf):
        raise TFCheckpointError(f"{where}: truncated protobuf")
      value, pos = bytes(buf[pos : pos + length]), pos + length
    elif wire_type == 5:
      if pos + 4 > len(buf):
        raise TFCheckpointError(f"{where}: truncated protobuf")
      value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
    else:
      raise TFCheckpointError(f"{where}: unsupported protobuf wire type {wire_type}")
    yield field, value


class _Entry(NamedTuple):
  """The parts of a BundleEntryProto this reader uses."""

  dtype_enum: int
  shape: tuple[int, ...]
  shard_id: int
  offset: int
  size: int
  crc32c: int | None  # masked, as stored
  num_slices: int


def _parse_shape(buf: bytes, where: str) -> tuple[int, ...]:
  dims = []
  for field, value in _proto_fields(buf, where):
    if field == 2:  # TensorShapeProto.dim
      size = 0
      for dim_field, dim_value in _proto_fields(value, where):
        if dim_field == 1:
          size = _signed64(dim_value)
      dims.append(size)
    elif field == 3 and value:  # unknown_rank
      raise TFCheckpointError(f"{where}: shape of unknown rank")
  return tuple(dims)


def _parse_entry(buf: bytes, where: str) -> _Entry:
  dtype_enum = shard_id = offset = size = num_slices = 0
  shape: tuple[int, ...] = ()
  crc = None
  for field, value in _proto_fields(buf, where):
    if field == 1:
      dtype_enum = value
    elif field == 2:
      shape = _parse_shape(value, where)
    elif field == 3:
      shard_id = _signed64(value)
    elif field == 4:
      offset = _signed64(value)
    elif field == 5:
      size = _signed64(value)
    elif field == 6:
      crc = value
    elif field == 7:
      num_slices += 1
  return _Entry(dtype_enum, shape, shard_id, offset, size, crc, num_slices)


def _parse_header(buf: bytes, where: str) -> tuple[int, int]:
  """BundleHeaderProto -> (num_shards, endianness); also rejects bundles too new to read."""
  num_shards, endianness = 1, 0
  for field, value in _proto_fields(buf, where):
    if field == 1:
      num_shards = _signed64(value)
    elif field == 2:
      endianness = value
    elif field == 3:  # VersionDef; format version 1 is the only one TF has written
      for version_field, version_value in _proto_fields(value, where):
        if version_field == 2 and _signed64(version_value) > 1:
          raise TFCheckpointError(
            f"{where}: bundle needs reader version {version_value}; this reader knows version 1"
          )
  return num_shards, endianness


# --- SSTable --------------------------------------------------------------------------------


def _read_block(table: bytes, handle: bytes, path: str) -> bytes:
  offset, pos = _varint(handle, 0, path)
  size, _ = _varint(handle, pos, path)
  end = offset + size
  if end + _BLOCK_TRAILER_SIZE > len(table):
    raise TFCheckpointError(
      f"{path}: block at {offset}+{size} runs past the end of the file ({len(table)} bytes); "
      "the index file is truncated"
    )
  contents = table[offset:end]
  block_type = table[end]
  (stored_crc,) = struct.unpack_from("<I", table, end + 1)
  if crc32c(table[offset : end + 1]) != _unmask_crc(stored_crc):
    raise TFCheckpointError(f"{path}: checksum mismatch in block at offset {offset}; the file is corrupt")
  if block_type != 0:
    name = {1: "snappy", 2: "zlib"}.get(block_type, f"type {block_type}")
    raise TFCheckpointError(
      f"{path}: block at offset {offset} is {name}-compressed; TensorFlow writes checkpoint "
      "indexes uncompressed and this reader only reads those"
    )
  return contents


def _block_entries(block: bytes, path: str) -> Iterator[tuple[bytes, bytes]]:
  if len(block) < 4:
    raise TFCheckpointError(f"{path}: block too short to hold its restart count")
  (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
  limit = len(block) - 4 - 4 * num_restarts
  if limit < 0:
    raise TFCheckpointError(f"{path}: block claims {num_restarts} restart points, more than fit")
  # Restart points only speed up seeks; a full scan just rebuilds each key from the one before.
  key = b""
  pos = 0
  while pos < limit:
    shared, pos = _varint(block, pos, path)
    unshared, pos = _varint(block, pos, path)
    value_len, pos = _varint(block, pos, path)
    if shared > len(key) or pos + unshared + value_len > limit:
      raise TFCheckpointError(f"{path}: corrupt block entry at byte {pos}")
    key = key[:shared] + block[pos : pos + unshared]
    pos += unshared
    yield key, block[pos : pos + value_len]
    pos += value_len


def _table_entries(path: str) -> Iterator[tuple[bytes, bytes]]:
  with open(path, "rb") as f:
    table = f.read()
  if len(table) < _FOOTER_SIZE:
    raise TFCheckpointError(
      f"{path}: {len(table)} bytes is too short for a TensorFlow checkpoint index "
      f"(an SSTable ends in a {_FOOTER_SIZE}-byte footer)"
    )
  footer = table[-_FOOTER_SIZE:]
  (magic,) = struct.unpack_from("<Q", footer, _FOOTER_SIZE - 8)
  if magic != _TABLE_MAGIC:
    raise TFCheckpointError(
      f"{path}: not a TensorFlow checkpoint index (expected an SSTable ending in magic number "
      f"{_TABLE_MAGIC:#x}, found {magic:#x})"
    )
  # Footer: metaindex handle, then index handle, each two varints. TF writes no meta blocks.
  _, pos = _varint(footer, 0, path)
  _, pos = _varint(footer, pos, path)
  _, end = _varint(footer, pos, path)
  _, end = _varint(footer, end, path)
  index_block = _read_block(table, footer[pos:end], path)
  for _, data_handle in _block_entries(index_block, path):
    yield from _block_entries(_read_block(table, data_handle, path), path)
