"""Pretraining instances written once as a TFDS array_record dataset, read back by random access.

Layout of a prepared `data_dir` (the folder is ours alone):

  data_dir/
    manifest.json                          what was built from what (see `build_config`), and counts
    bert_jax_pretraining_instances/1.0.0/  the TFDS dataset: train and validation splits

A build runs in a sibling folder `data_dir.incomplete-*` and becomes `data_dir` by one rename once the
data and the manifest are written, so an interrupted build never leaves a folder that looks
complete. A `data_dir` that exists was built to the end.

Validation holds out whole documents (never instances of a training document), chosen by a seeded
hash of the document's position in the source, so the choice does not depend on the other
documents. Documents go through instance creation in chunks of `chunk_documents` (BERT's script
likewise worked shard by shard): NSP's random next segments come from the same chunk, and memory
stays bounded by the chunk, not the corpus.

TensorFlow is not needed: TFDS writes array_record with its own serializer and reads it with
`as_data_source`. Records keep the order they were created in (shuffling is the input pipeline's
job, per epoch), so record i is always the same instance.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np

from bert_jax.data import instances as instances_lib
from bert_jax.files import write_json

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DATASET_NAME = "bert_jax_pretraining_instances"
DATASET_VERSION = "1.0.0"
SPLITS = ("train", "validation")
_HOLDOUT_TAG = b"bert_jax.validation"
_CHUNK_TAG = 0x63686E6B  # "chnk": chunk seeds never coincide with other streams of the same seed
_SPELLED_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
_TOKENIZE_BATCH = 1000  # sentences per tokenizer call: enough for the engine's threads


class TextSource(Protocol):
  """What the builder needs from a text source (bert_jax.data.text has two)."""

  def documents(self) -> Iterator[list[str]]: ...

  def fingerprint(self) -> dict[str, Any]: ...


# -------------------------------------------------------------------------------------------------
# What a build depends on.


def vocab_fingerprint(tokenizer) -> str:
  """sha256 over the vocab and the casing rules: what makes token ids mean the same thing."""
  digest = hashlib.sha256()
  digest.update("\n".join(tokenizer.vocab).encode("utf-8"))
  digest.update(f"\0lowercase={tokenizer.lowercase},strip_accents={tokenizer.strip_accents}".encode())
  return digest.hexdigest()


def _check_validation(validation: float | int) -> None:
  if isinstance(validation, bool) or not isinstance(validation, (int, float, np.integer, np.floating)):
    raise ValueError(f"validation={validation!r}; expected a fraction in [0, 1) or a document count >= 0")
  if isinstance(validation, (float, np.floating)) and not 0.0 <= validation < 1.0:
    raise ValueError(f"validation={validation!r} as a fraction must be in [0, 1); pass an int for a count")
  if isinstance(validation, (int, np.integer)) and validation < 0:
    raise ValueError(f"validation={validation!r} as a document count must be >= 0")


def build_config(
  *,
  source: TextSource,
  tokenizer,
  max_seq_length: int,
  pair_task: str = "nsp",
  short_seq_prob: float = 0.1,
  dupe_factor: int = 10,
  packing: bool = False,
  validation: float | int = 0.01,
  seed: int = 0,
  chunk_documents: int = 20_000,
) -> dict[str, Any]:
  """Everything that changes the records; a stored dataset is reused only when this is equal."""
  if pair_task not in instances_lib.PAIR_TASKS:
    raise ValueError(f"pair_task={pair_task!r}; expected one of {list(instances_lib.PAIR_TASKS)}")
  if packing and pair_task != "none":
    raise ValueError(
      f"packing=True lays whole documents end to end and has no sentence pairs, but pair_task={pair_task!r}; "
      "use pair_task='none' with packing"
    )
  if isinstance(dupe_factor, bool) or not isinstance(dupe_factor, (int, np.integer)) or dupe_factor < 1:
    raise ValueError(f"dupe_factor={dupe_factor!r}; expected an integer >= 1")
  if (
    isinstance(chunk_documents, bool)
    or not isinstance(chunk_documents, (int, np.integer))
    or chunk_documents < 2
  ):
    raise ValueError(f"chunk_documents={chunk_documents!r}; expected an integer >= 2")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed={seed!r}; expected a non-negative integer")
  _check_validation(validation)
  config = {
    "format_version": FORMAT_VERSION,
    "source": source.fingerprint(),
    "vocab_sha256": vocab_fingerprint(tokenizer),
    "vocab_size": len(tokenizer.vocab),
    "max_seq_length": int(max_seq_length),
    "pair_task": pair_task,
    "short_seq_prob": float(short_seq_prob),
    "dupe_factor": int(dupe_factor),
    "packing": bool(packing),
    "validation": validation if isinstance(validation, float) else int(validation),
    "seed": int(seed),
    "chunk_documents": int(chunk_documents),
  }
  # Stored as JSON, so compare as JSON (tuples become lists, and so on).
  return json.loads(json.dumps(config))


def record_features(config: dict[str, Any]) -> tuple[str, ...]:
  names = ["tokens", "token_type_ids"]
  if config["pair_task"] != "none":
    names.append("pair_label")
  if config["packing"]:
    names += ["segment_ids", "position_ids"]
  return tuple(names)


# -------------------------------------------------------------------------------------------------
# Documents to instances.


def _holdout_score(seed: int, index: int) -> float:
  """A uniform number in [0, 1) for document `index`: a pure function of (seed, index)."""
  h = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8, key=_HOLDOUT_TAG).digest()
  return int.from_bytes(h, "little") / 2.0**64


def _validation_indices(source: TextSource, validation: float | int, seed: int) -> Callable[[int], bool]:
  """Document index -> held out? A fraction decides per document; a count needs one counting pass."""
  if isinstance(validation, float):
    return lambda i: _holdout_score(seed, i) < validation
  if validation == 0:
    return lambda i: False
  total = sum(1 for _ in source.documents())
  if validation >= total:
    raise ValueError(
      f"validation={validation} documents, but the source has only {total}; "
      "hold out fewer so that some are left for training"
    )
  scores = np.array([_holdout_score(seed, i) for i in range(total)])
  held = set(np.argpartition(scores, validation)[:validation].tolist())
  return held.__contains__


def _tokenized_documents(
  source: TextSource, tokenizer, keep: Callable[[int], bool], counts: dict[str, int]
) -> Iterator[list[np.ndarray]]:
  """Documents (lists of int32 token id arrays) of the source whose index `keep` accepts."""
  pending: list[list[str]] = []
  # The tokenizer keeps "[SEP]" etc. whole wherever text spells them (as transformers does). In a
  # corpus such a token is text, and a stray [SEP] or [CLS] would break the instance layout, so
  # they become [UNK]. [UNK] itself stays: it is ordinary text to BERT.
  specials = np.array([i for i, t in enumerate(tokenizer.vocab) if t in _SPELLED_SPECIALS])
  unk = tokenizer.unk_id

  def flush() -> Iterator[list[np.ndarray]]:
    flat = [s for doc in pending for s in doc]
    # The tokenizer's own batch call, without [CLS]/[SEP] (stripped), so text is handled as at
    # fine-tuning and prediction time.
    ids = []
    for start in range(0, len(flat), _TOKENIZE_BATCH):
      encoded = tokenizer(flat[start : start + _TOKENIZE_BATCH], padding=False, truncation=False)
      for row in encoded["input_ids"]:
        row = np.asarray(row[1:-1], dtype=np.int32)
        row[np.isin(row, specials)] = unk
        ids.append(row)
    k = 0
    for doc in pending:
      sentences = [s for s in ids[k : k + len(doc)] if len(s)]
      k += len(doc)
      if sentences:
        counts["documents"] += 1
        counts["sentences"] += len(sentences)
        yield sentences
    pending.clear()

  n_sentences = 0
  for index, doc in enumerate(source.documents()):
    if keep(index):
      pending.append(doc)
      n_sentences += len(doc)
      if n_sentences >= _TOKENIZE_BATCH:
        yield from flush()
        n_sentences = 0
  yield from flush()


def _chunks(documents: Iterator[list[np.ndarray]], size: int) -> Iterator[list[list[np.ndarray]]]:
  """Chunks of `size` to 2 * size - 1 documents (the tail joins the last chunk, so no chunk is a
  lone document NSP could not pair); fewer only when the whole split is smaller."""
  buffer: list[list[np.ndarray]] = []
  for doc in documents:
    buffer.append(doc)
    if len(buffer) == 2 * size:
      yield buffer[:size]
      buffer = buffer[size:]
  if buffer:
    yield buffer


def _instances(
  source: TextSource,
  tokenizer,
  config: dict[str, Any],
  split: str,
  keep: Callable[[int], bool],
  counts: dict[str, int],
) -> Iterator[dict[str, np.ndarray]]:
  split_id = SPLITS.index(split)
  documents = _tokenized_documents(source, tokenizer, keep, counts)
  for c, chunk in enumerate(_chunks(documents, config["chunk_documents"])):
    if config["packing"]:
      packed = instances_lib.pack_documents(
        chunk, max_seq_length=config["max_seq_length"], cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id
      )
      made = packed * config["dupe_factor"]  # packing draws nothing at random: duplicates are equal
    else:
      chunk_seed = int(np.random.SeedSequence([_CHUNK_TAG, config["seed"], split_id, c]).generate_state(1)[0])
      made = instances_lib.create_all_instances(
        chunk,
        dupe_factor=config["dupe_factor"],
        seed=chunk_seed,
        max_seq_length=config["max_seq_length"],
        short_seq_prob=config["short_seq_prob"],
        pair_task=config["pair_task"],
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
      )
    for instance in made:
      counts["instances"] += 1
      counts["tokens"] += len(instance["tokens"])
      yield instance


# -------------------------------------------------------------------------------------------------
# The TFDS builder.


def _tfds():
  import tensorflow_datasets as tfds  # heavy; imported where records are written or read

  return tfds


def write_array_record_dataset(
  data_dir: str | os.PathLike,
  name: str,
  features: dict[str, Any],
  splits: dict[str, Callable[[], Iterable[dict[str, Any]]]],
  *,
  version: str = DATASET_VERSION,
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
  tfds = _tfds()
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
  _remove(os.path.join(data_dir, "downloads"))  # TFDS makes it; nothing is downloaded
  return os.fspath(builder.data_dir)


# -------------------------------------------------------------------------------------------------
# Building and opening.


def read_manifest(data_dir: str | os.PathLike) -> dict[str, Any] | None:
  """The manifest of a prepared data_dir; None when data_dir does not exist."""
  data_dir = os.fspath(data_dir)
  if not os.path.exists(data_dir):
    return None
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{data_dir!r} exists but has no {MANIFEST}: it is not a bert_jax pretraining dataset "
      "(or was written by something else); point data_dir at an empty or new folder"
    )
  with open(path, encoding="utf-8") as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path!r} is not valid JSON ({e}); delete {data_dir!r} to rebuild it") from None
  if manifest.get("config", {}).get("format_version") != FORMAT_VERSION:
    raise ValueError(
      f"{path!r} has format_version {manifest.get('config', {}).get('format_version')!r}, "
      f"this code reads {FORMAT_VERSION}; delete {data_dir!r} to rebuild it"
    )
  return manifest


def config_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
  """Human-readable 'key: stored -> wanted' lines for the keys that differ."""
  lines = []
  for key in sorted(set(stored) | set(wanted)):
    if stored.get(key) != wanted.get(key):
      lines.append(f"{key}: stored {stored.get(key)!r}, wanted {wanted.get(key)!r}")
  return lines


def _remove(path: str) -> None:
  shutil.rmtree(path, ignore_errors=True)


def build_pretraining_data(
  data_dir: str | os.PathLike,
  *,
  source: TextSource,
  tokenizer,
  max_seq_length: int,
  pair_task: str = "nsp",
  short_seq_prob: float = 0.1,
  dupe_factor: int = 10,
  packing: bool = False,
  validation: float | int = 0.01,
  seed: int = 0,
  chunk_documents: int = 20_000,
  on_mismatch: str = "error",
) -> dict[str, Any]:
  """Builds the train/validation instances into data_dir once; later calls reuse them. Returns the manifest.

  validation: a fraction of the documents (float in [0, 1)) or a number of documents (int) held out.
  on_mismatch: what to do when data_dir holds data built from another configuration (another vocab,
  max_seq_length, corpus, ...): "error" (default: a rebuild may take hours, and a typo should not
  start one) or "rebuild".

  Build on one process (e.g. process 0, then a barrier) or before launching; concurrent builders
  each write their own temporary folder, and all but the first to finish discard theirs.
  """
  if on_mismatch not in ("error", "rebuild"):
    raise ValueError(f"on_mismatch={on_mismatch!r}; expected 'error' or 'rebuild'")
  data_dir = os.path.abspath(os.fspath(data_dir))
  config = build_config(
    source=source,
    tokenizer=tokenizer,
    max_seq_length=max_seq_length,
    pair_task=pair_task,
    short_seq_prob=short_seq_prob,
    dupe_factor=dupe_factor,
    packing=packing,
    validation=validation,
    seed=seed,
    chunk_documents=chunk_documents,
  )
  existing = read_manifest(data_dir)
  if existing is not None:
    diff = config_differences(existing["config"], config)
    if not diff:
      logger.info("reusing the pretraining data in %s", data_dir)
      return existing
    if on_mismatch == "error":
      raise ValueError(
        f"{data_dir!r} holds pretraining data built from another configuration:\n  "
        + "\n  ".join(diff)
        + "\nPass on_mismatch='rebuild' (or delete the folder) to rebuild it, or choose another data_dir"
      )
    logger.warning("rebuilding %s: its configuration differs (%s)", data_dir, "; ".join(diff))

  parent = os.path.dirname(data_dir)
  os.makedirs(parent, exist_ok=True)
  stale = [n for n in os.listdir(parent) if n.startswith(os.path.basename(data_dir) + ".incomplete-")]
  if stale:
    logger.warning("leftovers of interrupted builds beside %s (safe to delete): %s", data_dir, stale)
  tmp = f"{data_dir}.incomplete-{uuid.uuid4().hex[:12]}"
  try:
    manifest = _build_into(tmp, source, tokenizer, config)
    _publish(tmp, data_dir, config, replace=existing is not None)
  finally:
    _remove(tmp)
  return read_manifest(data_dir) or manifest


def _build_into(tmp: str, source: TextSource, tokenizer, config: dict[str, Any]) -> dict[str, Any]:
  keep_validation = _validation_indices(source, config["validation"], config["seed"])
  counts = {split: dict.fromkeys(("documents", "sentences", "instances", "tokens"), 0) for split in SPLITS}

  wanted = SPLITS if config["validation"] else ("train",)
  names = record_features(config)
  tfds = _tfds()
  # Scalars for the label, variable-length int32 rows for the rest (stored unpadded).
  features = {
    n: tfds.features.Tensor(shape=() if n == "pair_label" else (None,), dtype=np.int32) for n in names
  }

  keep = {"train": lambda i: not keep_validation(i), "validation": keep_validation}

  def examples(split):
    for instance in _instances(source, tokenizer, config, split, keep[split], counts[split]):
      yield {n: np.asarray(instance[n], dtype=np.int32) for n in names}
    if not counts[split]["instances"]:
      raise ValueError(
        f"the {split} split has no instances ({counts[split]['documents']} documents): the corpus is too "
        f"small for validation={config['validation']!r}, or its text tokenizes to nothing"
      )

  splits = {split: functools.partial(examples, split) for split in wanted}
  builder_dir = write_array_record_dataset(tmp, DATASET_NAME, features, splits)
  manifest = {
    "config": config,
    "features": list(record_features(config)),
    "tfds_dir": os.path.relpath(builder_dir, tmp),
    "splits": {split: counts[split] for split in wanted},
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  write_json(os.path.join(tmp, MANIFEST), manifest)
  return manifest


def _publish(tmp: str, data_dir: str, config: dict[str, Any], replace: bool) -> None:
  """Moves a finished build into place. A build it replaces is moved aside first and deleted only
  after the rename, and put back if the rename fails."""
  old = None
  if replace and os.path.exists(data_dir):
    old = f"{data_dir}.stale-{uuid.uuid4().hex[:12]}"
    os.rename(data_dir, old)
  try:
    os.rename(tmp, data_dir)
  except OSError:
    if old is not None and not os.path.exists(data_dir):
      os.rename(old, data_dir)
      raise
    # Another process finished the same build first: keep its data if it matches.
    other = read_manifest(data_dir)
    if other is None or config_differences(other["config"], config):
      raise
    logger.info("another process built %s first; using its data", data_dir)
  if old is not None:
    _remove(old)


def open_split(data_dir: str | os.PathLike, split: str):
  """(manifest, random-access source) for one split of a prepared data_dir; records are dicts of
  int32 numpy arrays named as in manifest["features"]."""
  data_dir = os.fspath(data_dir)
  manifest = read_manifest(data_dir)
  if manifest is None:
    raise FileNotFoundError(
      f"no pretraining data in {data_dir!r}; build it first with build_pretraining_data (a folder left "
      "by an interrupted build is named data_dir.incomplete-* and is never read)"
    )
  if split not in manifest["splits"]:
    raise ValueError(f"{data_dir!r} has no split {split!r}; it has {sorted(manifest['splits'])}")
  builder = _tfds().builder_from_directory(os.path.join(data_dir, manifest["tfds_dir"]))
  return manifest, builder.as_data_source(split=split)
