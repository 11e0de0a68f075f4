"""Reads TensorFlow V2 checkpoints (the "tensor bundle" format) with numpy alone.

Google's original BERT releases ship `bert_model.ckpt.index` + `bert_model.ckpt.data-00000-of-00001`.
TensorFlow is a 1.5 GB optional dependency this project avoids, and the format is small enough to
read by hand:

* `<prefix>.index` is an SSTable (the LevelDB table layout): a 48-byte footer pointing at an index
  block, whose entries point at data blocks of sorted, prefix-compressed key/value pairs. The empty
  key holds a BundleHeaderProto; every other key is a tensor name whose value is a BundleEntryProto
  saying which data shard holds the tensor's bytes, where, and their crc32c.
* `<prefix>.data-SSSSS-of-NNNNN` hold the raw tensor bytes, little-endian, back to back.

The two protobuf messages are decoded straight from the wire format, so neither tensorflow nor
protobuf is needed.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import struct
from typing import Callable, Iterable, Iterator, NamedTuple, Union

import ml_dtypes
import numpy as np

__all__ = [
  "TFCheckpointError",
  "TFVariable",
  "find_checkpoint_prefix",
  "list_tf_variables",
  "read_tf_checkpoint",
]

NameFilter = Union[None, Iterable[str], Callable[[str], bool]]


class TFCheckpointError(ValueError):
  """A checkpoint file is malformed, or holds something this reader cannot turn into numpy."""


class TFVariable(NamedTuple):
  shape: tuple[int, ...]
  dtype: np.dtype | str  # a str names a TF dtype numpy cannot hold


# TensorFlow's DataType enum (types.proto) -> numpy. Only plain fixed-width numbers: strings are
# stored with varint length prefixes, and resource/variant values are not tensors of numbers.
_DTYPES: dict[int, np.dtype] = {
  1: np.dtype("<f4"),  # DT_FLOAT
  2: np.dtype("<f8"),  # DT_DOUBLE
  3: np.dtype("<i4"),  # DT_INT32
  4: np.dtype("u1"),  # DT_UINT8
  5: np.dtype("<i2"),  # DT_INT16
  6: np.dtype("i1"),  # DT_INT8
  9: np.dtype("<i8"),  # DT_INT64
  10: np.dtype("?"),  # DT_BOOL: one byte per element
  14: np.dtype(ml_dtypes.bfloat16),  # DT_BFLOAT16
  17: np.dtype("<u2"),  # DT_UINT16
  19: np.dtype("<f2"),  # DT_HALF
  22: np.dtype("<u4"),  # DT_UINT32
  23: np.dtype("<u8"),  # DT_UINT64
}
_UNSUPPORTED_DTYPE_NAMES = {
  7: "string",
  8: "complex64",
  11: "qint8",
  12: "quint8",
  13: "qint32",
  15: "qint16",
  16: "quint16",
  18: "complex128",
  20: "resource",
  21: "variant",
}

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic
_BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


# --- crc32c (Castagnoli) ---------------------------------------------------------------------
# TF checksums both the SSTable blocks and every tensor's bytes with crc32c, which neither zlib nor
# numpy provides. A byte-at-a-time Python loop manages a few MB/s, far too slow for BERT-large's
# 1.3 GB, so the data is cut into many equal lanes whose CRCs are advanced together, one 32-bit
# word of every lane per numpy step, and then merged: CRC is linear over GF(2), so crc(A + B) is
# crc(A) pushed through len(B) zero bytes, xor crc(B) started from zero. Pushing through zero
# bytes is a 32x32 bit matrix, applied to many values at once through four 256-entry tables (one
# per input byte).

_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_byte_tables() -> list[np.ndarray]:
  # tables[0] advances the register over one byte; tables[k] gives the effect of a byte followed
  # by k zero bytes, so four of them consume a little-endian 32-bit word in one step.
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(_CRC32C_POLY), table >> 1).astype(np.uint32)
  tables = [table]
  for _ in range(3):
    tables.append((tables[-1] >> 8) ^ table[tables[-1] & 0xFF])
  return tables


_WORD_TABLES = _make_byte_tables()
_BYTE_TABLE = _WORD_TABLES[0]


class _ZeroShift:
  """The linear map "advance a CRC register over n zero bytes", as four byte-lookup tables."""

  def __init__(self, columns: np.ndarray):
    # columns[i] is the image of bit i; tables[k][b] is the image of byte b placed at byte k.
    self.columns = columns
    bits = (np.arange(256, dtype=np.uint32)[:, None] >> np.arange(8, dtype=np.uint32)) & 1
    self.tables = []
    for k in range(4):
      masked = np.where(bits.astype(bool), columns[8 * k : 8 * k + 8][None, :], np.uint32(0))
      self.tables.append(np.bitwise_xor.reduce(masked, axis=1).astype(np.uint32))

  def __call__(self, x):
    t = self.tables
    return t[0][x & 0xFF] ^ t[1][(x >> 8) & 0xFF] ^ t[2][(x >> 16) & 0xFF] ^ t[3][(x >> 24) & 0xFF]

  def then(self, other: "_ZeroShift") -> "_ZeroShift":
    """This shift followed by `other`."""
    return _ZeroShift(other(self.columns))


@functools.lru_cache(maxsize=None)
def _zero_shift_pow2(k: int) -> _ZeroShift:
  """Advance over 2**k zero bytes."""
  if k == 0:
    bits = np.uint32(1) << np.arange(32, dtype=np.uint32)
    return _ZeroShift((_BYTE_TABLE[bits & 0xFF] ^ (bits >> 8)).astype(np.uint32))
  half = _zero_shift_pow2(k - 1)
  return half.then(half)


@functools.lru_cache(maxsize=256)
def _zero_shift(n: int) -> _ZeroShift:
  result = None
  for k in range(n.bit_length()):
    if n >> k & 1:
      step = _zero_shift_pow2(k)
      result = step if result is None else result.then(step)
  if result is None:
    return _ZeroShift(np.uint32(1) << np.arange(32, dtype=np.uint32))
  return result


def _crc_register(data: np.ndarray) -> int:
  """CRC register after `data` (uint8), started from zero, with no final xor."""
  n = data.size
  if n < 256:
    crc = 0
    for byte in data.tolist():
      crc = int(_BYTE_TABLE[(crc ^ byte) & 0xFF]) ^ (crc >> 8)
    return crc
  # Lanes are a power of two (so they merge pairwise) and at least 8 words long, so that small
  # tensors do not pay for thousands of tiny numpy calls; 2**16 lanes measured fastest.
  lanes = 1 << min(16, (n // 32).bit_length() - 1)
  lane_words = n // (4 * lanes)
  main = lanes * lane_words * 4
  columns = np.ascontiguousarray(data[:main].view("<u4").reshape(lanes, lane_words).T)
  t0, t1, t2, t3 = _WORD_TABLES
  regs = np.zeros(lanes, dtype=np.uint32)
  for column in columns:
    regs ^= column
    regs = t3[regs & 0xFF] ^ t2[(regs >> 8) & 0xFF] ^ t1[(regs >> 16) & 0xFF] ^ t0[regs >> 24]
  span = 4 * lane_words
  while regs.size > 1:
    regs = _zero_shift(span)(regs[0::2]) ^ regs[1::2]
    span *= 2
  crc = int(regs[0])
  tail = data[main:]
  if tail.size:
    crc = int(_zero_shift(tail.size)(np.uint32(crc))) ^ _crc_register(tail)
  return crc


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
  """Standard crc32c (initial value and final xor 0xFFFFFFFF), as TF computes it."""
  if isinstance(data, np.ndarray):
    buf = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
  else:
    buf = np.frombuffer(data, dtype=np.uint8)
  start = int(_zero_shift(buf.size)(np.uint32(0xFFFFFFFF)))
  return (start ^ _crc_register(buf) ^ 0xFFFFFFFF) & 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
  # TF (like LevelDB) stores CRCs rotated and offset, because a CRC of data that itself contains
  # CRCs is weak; undo that before comparing.
  rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
  return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


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


# --- the bundle -----------------------------------------------------------------------------


def find_checkpoint_prefix(path: str | os.PathLike) -> str:
  """Accepts a checkpoint prefix, its `.index` or data file, or a directory; returns the prefix.

  A directory must hold exactly one `*.index`, or a `checkpoint` state file naming the one to use
  (TF keeps several numbered checkpoints side by side during training).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    indexes = sorted(glob.glob(os.path.join(glob.escape(path), "*.index")))
    if len(indexes) == 1:
      return indexes[0][: -len(".index")]
    state = os.path.join(path, "checkpoint")
    if indexes and os.path.isfile(state):
      with open(state, encoding="utf-8") as f:
        match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', f.read(), re.MULTILINE)
      if match:
        # Text-format escapes (\" and octal \ooo for non-ASCII bytes) back to the UTF-8 path.
        escaped = match.group(1).encode("utf-8")
        prefix = escaped.decode("unicode_escape").encode("latin-1").decode("utf-8")
        if not os.path.isabs(prefix):
          return os.path.join(path, prefix)
        # Saver records absolute paths by default, which go stale when the directory is moved or
        # unpacked elsewhere; the checkpoint itself sits beside the state file.
        if os.path.isfile(prefix + ".index"):
          return prefix
        return os.path.join(path, os.path.basename(prefix))
    if not indexes:
      raise FileNotFoundError(f"{path}: no TensorFlow checkpoint here (expected a '*.index' file)")
    found = ", ".join(os.path.basename(i) for i in indexes)
    raise TFCheckpointError(
      f"{path}: holds {len(indexes)} checkpoints ({found}) and no 'checkpoint' file naming one; "
      "pass the prefix of the one you want"
    )
  if path.endswith(".index"):
    return path[: -len(".index")]
  return _DATA_SUFFIX.sub("", path)


class _Bundle:
  """The parsed index of one checkpoint."""

  def __init__(self, path: str | os.PathLike):
    self.prefix = find_checkpoint_prefix(path)
    self.index_path = self.prefix + ".index"
    if not os.path.isfile(self.index_path):
      raise FileNotFoundError(
        f"{self.index_path}: no such file (expected the TensorFlow checkpoint index for prefix "
        f"{self.prefix!r}, e.g. bert_model.ckpt.index)"
      )
    self.entries: dict[str, _Entry] = {}
    header = None
    for key, value in _table_entries(self.index_path):
      if key == b"":
        header = _parse_header(value, self.index_path)
      elif key[:1] == b"\x00":
        # Keys for the slices of partitioned variables start with a zero byte (ordered-code
        # tag); the variable's own entry lists its slices and is where we report it.
        continue
      else:
        name = key.decode("utf-8", "backslashreplace")
        self.entries[name] = _parse_entry(value, f"{self.index_path} (tensor {name!r})")
    if header is None:
      raise TFCheckpointError(f"{self.index_path}: SSTable has no bundle header (empty key)")
    self.num_shards, endianness = header
    if endianness != 0:
      raise TFCheckpointError(
        f"{self.index_path}: written big-endian; this reader only reads little-endian bundles"
      )

  def data_path(self, shard_id: int) -> str:
    return f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"

  def listed_dtype(self, name: str) -> np.dtype | str:
    enum = self.entries[name].dtype_enum
    if enum in _DTYPES:
      return _DTYPES[enum]
    return _UNSUPPORTED_DTYPE_NAMES.get(enum, f"DataType enum {enum}")

  def readable_dtype(self, name: str) -> np.dtype:
    entry = self.entries[name]
    dtype = self.listed_dtype(name)
    if isinstance(dtype, str):
      raise TFCheckpointError(
        f"{self.index_path}: tensor {name!r} has dtype {dtype}, which this reader does not turn "
        f"into numpy (it reads {', '.join(sorted({d.name for d in _DTYPES.values()}))}); "
        "pass names= to read the other tensors"
      )
    if entry.num_slices:
      raise TFCheckpointError(
        f"{self.index_path}: tensor {name!r} is a partitioned variable saved as "
        f"{entry.num_slices} slices; this reader only reads whole tensors; pass names= to read "
        "the other tensors"
      )
    return dtype

  def select(self, names: NameFilter) -> list[str]:
    if names is None:
      return list(self.entries)
    if callable(names):
      return [n for n in self.entries if names(n)]
    if isinstance(names, str):
      raise TypeError("names= takes a list of tensor names or a predicate, not a single string")
    wanted = list(dict.fromkeys(names))
    missing = [n for n in wanted if n not in self.entries]
    if missing:
      raise KeyError(
        f"{self.index_path}: no tensor named {', '.join(map(repr, missing[:5]))}"
        f"{' ...' if len(missing) > 5 else ''}; it holds {len(self.entries)} tensors, e.g. "
        f"{', '.join(map(repr, list(self.entries)[:5]))}"
      )
    return wanted


def list_tf_variables(path: str | os.PathLike, names: NameFilter = None) -> dict[str, TFVariable]:
  """Name -> (shape, dtype) for the tensors in the checkpoint, reading only the index.

  `dtype` is a numpy dtype, or TF's name for a dtype numpy cannot hold ("string", "resource",
  ...), which `read_tf_checkpoint` refuses. A partitioned variable is listed with its full shape,
  though only its slices are stored and `read_tf_checkpoint` refuses it too.
  """
  bundle = _Bundle(path)
  return {n: TFVariable(bundle.entries[n].shape, bundle.listed_dtype(n)) for n in bundle.select(names)}


def read_tf_checkpoint(
  path: str | os.PathLike, names: NameFilter = None, *, verify_checksums: bool = True
) -> dict[str, np.ndarray]:
  """Reads a TensorFlow V2 checkpoint into numpy arrays, without TensorFlow.

  Args:
    path: the checkpoint prefix (`.../bert_model.ckpt`), its `.index` file, or a directory holding
      one checkpoint.
    names: which tensors to read: None for all, a collection of names, or a predicate on the name
      (e.g. to skip optimizer slots: `lambda n: not n.endswith(("adam_m", "adam_v"))`).
    verify_checksums: compare each tensor's crc32c with the one TF stored (about 0.5 s per
      100 MB here); catches corrupt or mixed-up data files.

  Returns:
    tensor name -> array, in the index's (sorted) order.
  """
  bundle = _Bundle(path)
  selected = bundle.select(names)
  # Refuse unsupported tensors before reading any data.
  dtypes = {n: bundle.readable_dtype(n) for n in selected}
  result: dict[str, np.ndarray] = {}
  by_shard: dict[int, list[str]] = {}
  for name in selected:
    by_shard.setdefault(bundle.entries[name].shard_id, []).append(name)
  for shard_id, shard_names in sorted(by_shard.items()):
    data_path = bundle.data_path(shard_id)
    if not os.path.isfile(data_path):
      raise FileNotFoundError(
        f"{data_path}: no such file (expected data shard {shard_id} of {bundle.num_shards} "
        f"named by {bundle.index_path})"
      )
    file_size = os.path.getsize(data_path)
    with open(data_path, "rb") as f:
      for name in sorted(shard_names, key=lambda n: bundle.entries[n].offset):
        entry, dtype = bundle.entries[name], dtypes[name]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.size != count * dtype.itemsize:
          raise TFCheckpointError(
            f"{bundle.index_path}: tensor {name!r} of shape {entry.shape} and dtype {dtype.name} "
            f"should take {count * dtype.itemsize} bytes but the index says {entry.size}"
          )
        if entry.offset + entry.size > file_size:
          raise TFCheckpointError(
            f"{data_path}: truncated: tensor {name!r} needs bytes {entry.offset} to "
            f"{entry.offset + entry.size} but the file has {file_size}"
          )
        raw = np.empty(entry.size, dtype=np.uint8)
        f.seek(entry.offset)
        if f.readinto(memoryview(raw)) != entry.size:
          raise TFCheckpointError(f"{data_path}: truncated while reading tensor {name!r}")
        if verify_checksums and entry.crc32c is not None:
          if crc32c(raw) != _unmask_crc(entry.crc32c):
            raise TFCheckpointError(
              f"{data_path}: checksum mismatch for tensor {name!r} (bytes {entry.offset} to "
              f"{entry.offset + entry.size}); the data file is corrupt or belongs to another index"
            )
        result[name] = raw.view(dtype).reshape(entry.shape)
  return {n: result[n] for n in selected}
