"""Opening a prepared TFDS dataset split TensorFlow-free (`tfds.data_source`), with the one error every TFDS
reader (pretraining text, task rows, SQuAD) raises when it cannot."""

from __future__ import annotations

import os


def open_data_source(name: str, split: str, data_dir: str | os.PathLike | None = None):
  """`tfds.data_source(name, split=split, data_dir=data_dir)`: random access to the records of a dataset the
  user has prepared in array_record format; nothing is downloaded. FileNotFoundError when it cannot open."""
  import tensorflow_datasets as tfds  # heavy; only TFDS sources pay for it

  data_dir = None if data_dir is None else os.fspath(data_dir)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # TFDS raises several types; all mean the same to the user
    # TFDS's first line says what is missing; the rest lists every dataset it knows.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise FileNotFoundError(
      f"cannot open TFDS dataset {name!r} split {split!r} in data_dir={data_dir!r}: {reason} "
      "Prepare it first in array_record format (tfds.data_source reads no other format, and nothing "
      "is downloaded here)"
    ) from e
