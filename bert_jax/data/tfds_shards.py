"""TFDS array_record datasets written in parallel: every worker serializes its own examples into shard files
(`Encoder`, `write_records`), and one process turns the finished shards into a dataset TFDS reads (`assemble`) by
linking them under TFDS's file names and writing the metadata, so no record passes through one process twice.

TensorFlow is not needed. Examples are serialized with sorted feature keys (`deterministic=True`): TFDS's own
writer leaves the order of the feature map to the process's string hashing, so the same example would otherwise
come out as different bytes in different processes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class Encoder:
  """example dict -> the bytes of its tf.train.Example, as TFDS stores it for these features."""

  def __init__(self, features: Mapping[str, Any]):
    import tensorflow_datasets as tfds  # heavy; imported where records are written
    from tensorflow_datasets.core import example_serializer

    self.features = tfds.features.FeaturesDict(dict(features))
    self._serializer = example_serializer.ExampleSerializer(self.features.get_serialized_info())

  def __call__(self, example: Mapping[str, Any]) -> bytes:
    encoded = self.features.encode_example(example)
    return self._serializer.get_tf_example(encoded).SerializeToString(deterministic=True)


def write_records(path: str, records: Iterable[bytes]) -> tuple[int, int]:
  """Writes serialized records into one array_record file, atomically (a temporary name, then a rename);
  returns (records, bytes)."""
  from array_record.python import array_record_module

  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  count = size = 0
  # group_size:1, as TFDS writes it: every record can be read on its own (random access).
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  try:
    for record in records:
      writer.write(record)
      count += 1
      size += len(record)
  finally:
    writer.close()
  try:
    os.replace(tmp, path)
  except OSError:
    os.remove(tmp)
    raise
  return count, size


def _link(src: str, dst: str) -> None:
  """dst names src's data: a hard link (instant, and src stays whole until the caller deletes it), or a copy
  where the file system has no hard links."""
  try:
    os.link(src, dst)
  except OSError:
    shutil.copyfile(src, dst)


def assemble(
  data_dir: str | os.PathLike,
  name: str,
  features: Mapping[str, Any],
  splits: Mapping[str, Sequence[tuple[str, int, int]]],
  *,
  version: str = "1.0.0",
) -> str:
  """A TFDS dataset `name` in data_dir/name/version made of finished shard files, record order kept; returns the
  builder directory (`tfds.builder_from_directory(it).as_data_source(split)` reads it).

  splits: split -> its shards in order, each (path, records, bytes) as `write_records` returned them. Shards with
  no records are left out (TFDS has no use for empty files)."""
  import tensorflow_datasets as tfds  # heavy; imported where records are written

  builder_dir = os.path.join(os.fspath(data_dir), name, version)
  os.makedirs(builder_dir)
  every_split = tfds.core.ShardedFileTemplate(
    data_dir=builder_dir, dataset_name=name, filetype_suffix="array_record"
  )
  infos = []
  for split, shards in splits.items():
    kept = [s for s in shards if s[1]]
    template = dataclasses.replace(every_split, split=split)
    for i, (path, _, _) in enumerate(kept):
      _link(path, os.fspath(template.sharded_filepath(shard_index=i, num_shards=len(kept))))
    infos.append(
      tfds.core.SplitInfo(
        name=split,
        shard_lengths=[s[1] for s in kept],
        num_bytes=sum(s[2] for s in kept),
        filename_template=template,
      )
    )
  tfds.folder_dataset.write_metadata(
    data_dir=builder_dir,
    features=tfds.features.FeaturesDict(dict(features)),
    split_infos=infos,
    filename_template=every_split,
    check_data=False,
    disable_shuffling=True,  # record i is the i-th record written: shuffling is the input pipeline's job
  )
  return builder_dir
