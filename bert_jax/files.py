"""Local files: atomic writes (a reader never sees a half-written file, and an interrupted write leaves
the previous version in place), and the refusal of URLs where bert_jax needs a local path."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from typing import Any, Iterator

from bert_jax import hub


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path beside `path`; on success it replaces `path` in one rename."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


def write_json(path: str | os.PathLike, value: Any) -> None:
  write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


# A URL's scheme (gs://, s3://, hf://, http://): paths bert_jax cannot open through the local file system.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
  return bool(_URL.match(os.fspath(path)))


def require_local(path: str | os.PathLike, what: str) -> None:
  """Refuses a URL where bert_jax reads or writes through the local file system (`what` names the flag or
  field). Without this, os.makedirs("gs://b/run") makes a local folder "gs:/b/run" on each host: a pod's
  workers would each write their own copy and the others would not see what process 0 wrote."""
  path = os.fspath(path)
  if is_url(path):
    scheme = path.split("://", 1)[0]
    raise ValueError(
      f"{what}={path!r} is a {scheme}:// URL, but bert_jax reads and writes it through the local file "
      f"system, which has no {scheme}:// paths. Give a path every host sees: a shared file system, or the "
      "bucket mounted with Cloud Storage FUSE on every host (README, 'Cloud Storage'), e.g. "
      "/gcs/BUCKET/runs/NAME"
    )


# Config fields (by their last name, at any depth: a stages config nests jobs) that hold local paths.
PATH_FIELDS = (
  "source",
  "vocab",
  "data_dir",
  "train",
  "validation",
  "init_from",
  "resume",
  "model_path",
  "eval_files",
  "model_config",
  "task_dir",
)
# Fields that take a checkpoint (or its tokenizer), which may also be a HuggingFace Hub name (hf://ORG/NAME,
# bert_jax/hub.py).
CHECKPOINT_FIELDS = ("init_from", "model_path", "vocab")


def check_config_paths(config, prefix: str = "config") -> None:
  """`require_local` for every path field of a (nested) config, except Hub names (hf://) of checkpoints. Not
  data.tfds_data_dir: TFDS opens gs:// data folders itself, through its own file layer."""
  for key, value in config.items():
    name = f"{prefix}.{key}"
    if hasattr(value, "items"):
      check_config_paths(value, name)
    elif key in PATH_FIELDS and isinstance(value, str):
      if key in CHECKPOINT_FIELDS and hub.is_hub(value):
        try:  # the name's shape now, not when the job reaches it
          hub.parse(value)
        except hub.HubError as e:
          raise ValueError(f"--{name}: {e}") from None
        continue
      for part in value.split(","):  # source and validation take comma-separated lists
        if hub.is_hub(part.strip()):
          raise ValueError(
            f"--{name}={value!r}: a HuggingFace Hub name is taken where a checkpoint or its tokenizer goes "
            f"({', '.join(CHECKPOINT_FIELDS)}); {key} needs a local path"
          )
        require_local(part.strip(), f"--{name}")
