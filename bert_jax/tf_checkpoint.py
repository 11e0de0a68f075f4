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
protobuf is needed. This module is the reader's public face (finding the prefix, listing and reading
tensors from the data shards); the index's decoding lives in tf_index.py and the checksum in crc32c.py.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

import ml_dtypes
import numpy as np

from bert_jax.crc32c import _unmask_crc, crc32c
from bert_jax.tf_index import (
  TFCheckpointError,
  _Entry,
  _parse_entry,
  _parse_header,
  _table_entries,
)

__all__ = [
  "TFCheckpointError",
  "TFVariable",
  "find_checkpoint_prefix",
  "list_tf_variables",
  "read_tf_checkpoint",
]

NameFilter = Iterable[str] | Callable[[str], bool] | None


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

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


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
        if verify_checksums and entry.crc32c is not None and crc32c(raw) != _unmask_crc(entry.crc32c):
          raise TFCheckpointError(
            f"{data_path}: checksum mismatch for tensor {name!r} (bytes {entry.offset} to "
            f"{entry.offset + entry.size}); the data file is corrupt or belongs to another index"
          )
        result[name] = raw.view(dtype).reshape(entry.shape)
  return {n: result[n] for n in selected}
