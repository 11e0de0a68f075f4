"""TFDS datasets TensorFlow-free: opening a prepared split (`tfds.data_source`; a TFRecord copy through TensorFlow
when it is installed), with the one error every TFDS reader (pretraining text, task rows, SQuAD) raises when it
cannot, and writing a dataset in array_record format (the pretraining instances; test fixtures)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from typing import Any


def open_data_source(name: str, split: str, data_dir: str | os.PathLike | None = None):
  """`tfds.data_source(name, split=split, data_dir=data_dir)`: random access to the records of a dataset the
  user has prepared in array_record format; nothing is downloaded. A dataset prepared as TFRecord (TFDS's
  default) is read whole with TensorFlow when it is installed (`tfrecord_records`), else FileNotFoundError says
  how to convert it once. FileNotFoundError when it cannot open."""
  import tensorflow_datasets as tfds  # heavy; only TFDS sources pay for it

  data_dir = None if data_dir is None else os.fspath(data_dir)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # TFDS raises several types; all mean the same to the user
    folder = tfrecord_folder(name, data_dir)
    if folder is not None:
      return tfrecord_records(name, split, data_dir, folder)
    # TFDS's first line says what is missing; the rest lists every dataset it knows.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise FileNotFoundError(
      f"cannot open TFDS dataset {name!r} split {split!r} in data_dir={data_dir!r}: {reason} "
      "Prepare it first in array_record format (tfds.data_source reads no other format, and nothing "
      "is downloaded here)"
    ) from e


def tfrecord_folder(name: str, data_dir: str | None) -> str | None:
  """The prepared dataset's folder when it is stored only as TFRecord (no random-access copy beside it)."""
  import tensorflow_datasets as tfds

  try:
    builder = tfds.builder(name, data_dir=data_dir)
    formats = {f.value for f in builder.info.available_file_formats()}
  except Exception:  # noqa: BLE001 - not prepared at all: the caller's error says so
    return None
  return os.fspath(builder.data_dir) if formats == {"tfrecord"} else None


def _has_tensorflow() -> bool:
  import importlib.util

  return importlib.util.find_spec("tensorflow") is not None


def tfrecord_records(name: str, split: str, data_dir: str | None, folder: str) -> list:
  """Every record of a TFRecord split, as numpy dicts in the order tfds.data_source gives an array_record copy
  (shards one after another). Needs TensorFlow (`pip install 'bert_jax[tf]'`); without it, FileNotFoundError
  with the one-time conversion to array_record (TFDS's converter, which itself needs TensorFlow and Beam)."""
  if not _has_tensorflow():
    # TFDS's converter imports tensorflow and apache_beam, and the tfds command line also mlcroissant (4.9.10).
    raise FileNotFoundError(
      f"TFDS dataset {name!r} (split {split!r}) in {folder} is stored as TFRecord, which only TensorFlow reads; "
      "bert_jax reads array_record without it. Either install TensorFlow (pip install 'bert_jax[tf]'), or "
      "convert the copy once with TFDS's converter, in an environment with tensorflow-datasets and "
      "pip install tensorflow apache-beam mlcroissant (the tfds command line imports all three): "
      f"tfds convert_format --dataset_version_dir={folder} --out_file_format=array_record "
      "(it writes array_record shards beside the TFRecord ones and lists them in dataset_info.json; "
      "bert_jax then reads them without TensorFlow)"
    )
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=data_dir)
  # One shard after another (interleave_cycle_length=1): the order an array_record copy is read in.
  dataset = builder.as_dataset(
    split=split, shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1)
  )
  return list(tfds.as_numpy(dataset))


def write_array_record_dataset(
  data_dir: str | os.PathLike,
  name: str,
  features: dict[str, Any],
  splits: dict[str, Callable[[], Iterable[dict[str, Any]]]],
  *,
  version: str = "1.0.0",
  config: str | None = None,
  keep_order: bool = True,
) -> str:
  """Writes a TFDS dataset in array_record format, TensorFlow-free; returns its builder directory.

  features: name -> TFDS feature (e.g. tfds.features.Tensor(shape=(None,), dtype=np.int32)).
  splits: split name -> function returning that split's examples (dicts keyed like features).
  config: a builder config name, as in "wikipedia/20230601.en" (name/config).
  keep_order: record i is the i-th example generated (TFDS would otherwise order by key hash).
  The result reads back with `tfds.data_source("name[/config]", data_dir=data_dir)` or
  `tfds.builder_from_directory(returned_dir).as_data_source(split)`.
  """
  import tensorflow_datasets as tfds  # heavy; imported where records are written or read
  from etils import epath

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(version)
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)] if config else []

    # TFDS 4.9.10 finds a builder's source file through `importlib_resources`, which etils >= 1.15
    # no longer installs (TFDS imports it lazily, so nothing fails until a build). Naming the file
    # here skips that lookup.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      return epath.Path(__file__)

    def _info(self):
      return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features), disable_shuffling=keep_order
      )

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(make) for split, make in splits.items()}

    def _generate_examples(self, make):
      yield from enumerate(make())

  Builder.name = name
  data_dir = os.fspath(data_dir)
  builder = Builder(data_dir=data_dir, file_format="array_record", config=config)
  builder.download_and_prepare(download_dir=os.path.join(data_dir, "downloads"))
  shutil.rmtree(
    os.path.join(data_dir, "downloads"), ignore_errors=True
  )  # TFDS makes it; nothing is downloaded
  return os.fspath(builder.data_dir)
