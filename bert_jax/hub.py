"""Checkpoints from the HuggingFace Hub: `hf://ORG/NAME[@REVISION]` wherever bert_jax takes a checkpoint
folder (`from_pretrained`, `Predictor.from_pretrained`, `config.init_from`, `config.model_path`, the predict
CLI's `--model`, `Tokenizer.from_pretrained`).

The name is resolved to a local folder by `huggingface_hub.snapshot_download` (installed with `tokenizers`),
into its usual cache (`HF_HOME` / `HF_HUB_CACHE`), fetching only what bert_jax reads: the JSON and text files
(configs, vocabulary, tokenizer) and one weights file, `model.safetensors` (or a bert_jax export's
`params.safetensors`, or a Google checkpoint's `bert_model.ckpt.*`), and `pytorch_model.bin` only when the
repository has none of those. With `HF_HUB_OFFLINE=1` it reads the cache alone. A plain path is never taken
for a Hub name: the `hf://` prefix says which is meant.
"""

from __future__ import annotations

import os
import re

PREFIX = "hf://"
# ORG/NAME or NAME (the Hub's legacy un-namespaced models), then an optional @REVISION (branch, tag, commit,
# refs/pr/N). The shape only: huggingface_hub validates the name itself (HFValidationError -> HubError).
_NAME = re.compile(r"^(?P<repo>[\w.-]+(?:/[\w.-]+)?)(?:@(?P<revision>[^\s@]+))?$")
# What bert_jax reads from a checkpoint folder (pretrained.detect_format, convert.read_hf_weights).
_FILES = ["*.json", "*.txt"]  # configs, vocabulary, tokenizer: all a Tokenizer needs
_FIRST = _FILES + ["model.safetensors", "params.safetensors", "*.ckpt.*", "*.ckpt-*"]
_WEIGHTS = ("model.safetensors", "params.safetensors")
_FALLBACK = ["pytorch_model.bin"]
# huggingface_hub.errors classes local_folder tells apart (huggingface_hub 0.25 and later have them all).
_ERRORS = (
  "GatedRepoError",
  "HFValidationError",
  "HfHubHTTPError",
  "LocalEntryNotFoundError",
  "RepositoryNotFoundError",
  "RevisionNotFoundError",
)


class HubError(FileNotFoundError):
  """A Hub name that could not be resolved to a local folder (bad name, offline, not found)."""


def is_hub(path: str | os.PathLike) -> bool:
  return os.fspath(path).startswith(PREFIX)


def parse(path: str) -> tuple[str, str | None]:
  """`hf://ORG/NAME[@REVISION]` -> (repo id, revision or None)."""
  match = _NAME.match(path[len(PREFIX) :])
  if not match:
    raise HubError(
      f"{path!r} is not a Hub model name: expected hf://ORG/NAME or hf://ORG/NAME@REVISION "
      "(letters, digits, '-', '_', '.')"
    )
  return match["repo"], match["revision"]


def local_folder(path: str | os.PathLike, weights: bool = True) -> str:
  """A local folder for `path`: the path itself, or for `hf://...` the downloaded (or cached) snapshot;
  without `weights` only the JSON and text files (what a Tokenizer reads)."""
  path = os.fspath(path)
  if not is_hub(path):
    return path
  repo, revision = parse(path)
  try:
    import huggingface_hub
  except ImportError:
    raise HubError(
      f"{path}: loading from the Hub needs huggingface_hub (pip install huggingface_hub)"
    ) from None
  try:
    from huggingface_hub import errors
  except ImportError:
    errors = None
  if errors is None or not all(hasattr(errors, name) for name in _ERRORS):
    raise HubError(
      f"{path}: huggingface_hub {huggingface_hub.__version__} is too old for bert_jax's Hub loading "
      "(pip install -U huggingface_hub)"
    ) from None

  def fetch(patterns):
    try:
      return huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=patterns)
    except errors.HFValidationError as e:
      raise HubError(f"{path}: not a valid Hub model name ({e})") from None
    except errors.LocalEntryNotFoundError as e:
      raise HubError(
        f"{path}: not in the local Hub cache and the Hub cannot be reached (offline, or HF_HUB_OFFLINE set): "
        f"download it once with network, or give a local folder ({e})"
      ) from None
    except errors.GatedRepoError:
      raise HubError(
        f"{path}: a gated repository: accept its terms on its Hub page, then log in (`hf auth login`)"
      ) from None
    except errors.RepositoryNotFoundError:
      raise HubError(
        f"{path}: no such repository on the Hub (or it is private: log in with `hf auth login`)"
      ) from None
    except errors.RevisionNotFoundError:
      raise HubError(f"{path}: the repository has no revision {revision!r}") from None
    except errors.HfHubHTTPError as e:
      raise HubError(f"{path}: the Hub refused the download ({e})") from None

  if not weights:
    return fetch(_FILES)
  folder = fetch(_FIRST)
  names = set(os.listdir(folder))
  if not names & set(_WEIGHTS) and not any(".ckpt" in n for n in names):
    if "model.safetensors.index.json" in names:  # known before fetching gigabytes of shards
      raise HubError(
        f"{path}: sharded safetensors checkpoints are not supported yet (expected model.safetensors)"
      )
    folder = fetch(_FIRST + _FALLBACK)
  return folder
