"""Pretraining instances written once as a TFDS array_record dataset, read back by random access.

Layout of a prepared `data_dir` (the folder is ours alone):

  data_dir/
    manifest.json                          what was built from what (see `build_config`), and counts
    bert_jax_pretraining_instances/1.0.0/  the TFDS dataset: train and validation splits

The instances are made chunk by chunk on every core and every host (data/build.py), each finished chunk kept in
`data_dir.partial/` so an interrupted build resumes; the dataset itself is written in a sibling folder
`data_dir.incomplete-*` that becomes `data_dir` by one rename once the data and the manifest are written, so an
interrupted build never leaves a folder that looks complete. A `data_dir` that exists was built to the end.

Validation holds out whole documents (never instances of a training document), chosen by a seeded
hash of the document's position in the source, so the choice does not depend on the other
documents. Documents go through instance creation in chunks of `chunk_documents` documents or `chunk_chars`
characters, whichever is reached first (BERT's script
likewise worked shard by shard): NSP's random next segments come from the same chunk, and memory
stays bounded by the chunk, not the corpus.

TensorFlow is not needed: TFDS writes array_record with its own serializer and reads it with
`as_data_source`. Records keep the order they were created in (shuffling is the input pipeline's
job, per epoch), so record i is always the same instance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from bert_jax.data import build as build_lib
from bert_jax.data import instances as instances_lib
from bert_jax.data import tfds_shards
from bert_jax.data.tfds_source import write_array_record_dataset  # noqa: F401  (re-exported: test fixtures)
from bert_jax.files import write_json

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# 2: chunks are cut from the documents before tokenization (so that workers can tokenize them).
FORMAT_VERSION = 2
DATASET_NAME = "bert_jax_pretraining_instances"
DATASET_VERSION = "1.0.0"
SPLITS = build_lib.SPLITS  # ("train", "validation")
_HOLDOUT_TAG = b"bert_jax.validation"


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
  chunk_chars: int = 1_000_000,
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
  if isinstance(chunk_chars, bool) or not isinstance(chunk_chars, (int, np.integer)) or chunk_chars < 0:
    raise ValueError(f"chunk_chars={chunk_chars!r}; expected an integer >= 0 (0: no limit)")
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
    "chunk_chars": int(chunk_chars),
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


def _instances(
  source: TextSource,
  tokenizer,
  config: dict[str, Any],
  split: str,
  keep: Callable[[int], bool],
  counts: dict[str, int],
) -> Iterator[dict[str, np.ndarray]]:
  """One split's instances in record order, made here chunk after chunk: what a build of any number of workers
  and hosts stores (`keep`: document index -> in this split)."""
  held_out = (lambda i: not keep(i)) if split == "train" else keep
  plan = build_lib.plan_chunks(
    source, held_out, (split,), config["chunk_documents"], max_chars=config["chunk_chars"]
  )
  for chunk in plan:
    made, chunk_counts = build_lib.chunk_instances(chunk, tokenizer, config)
    for key, value in chunk_counts.items():
      counts[key] = counts.get(key, 0) + value
    yield from made


# -------------------------------------------------------------------------------------------------
# The TFDS builder.


def _tfds():
  import tensorflow_datasets as tfds  # heavy; imported where records are written or read

  return tfds


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
  chunk_chars: int = 1_000_000,
  on_mismatch: str = "error",
  workers: int = 1,
  process_index: int = 0,
  process_count: int = 1,
  all_ok: Callable[[bool], bool] | None = None,
  label: str = "building pretraining data",
) -> dict[str, Any]:
  """Builds the train/validation instances into data_dir once; later calls reuse them. Returns the manifest.

  validation: a fraction of the documents (float in [0, 1)) or a number of documents (int) held out.
  on_mismatch: what to do when data_dir holds data built from another configuration (another vocab,
  max_seq_length, corpus, ...): "error" (default: a rebuild may take hours, and a typo should not
  start one) or "rebuild".
  workers: worker processes for the chunks (0: every core; 1: this process alone). The records are the same.
  process_index / process_count / all_ok: a multi-host job calls this on every process with `all_ok`, a
  collective every process reaches (this process's "no error so far" -> every process's); each builds its share
  of the chunks into data_dir.partial-* (a file system every host shares) and process 0 writes the dataset. An
  error on one process stops every process. Alone: process 0 of 1.
  Concurrent builds of one data_dir wait for each other (data_dir.lock beside it): one builds, the other reuses.
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
    chunk_chars=chunk_chars,
  )
  workers = build_lib.resolve_workers(workers)
  if process_count == 1:  # alone, a stored build of this config is the answer; together, process 0 decides
    existing = _reusable(data_dir, config, on_mismatch)
    if existing is not None and not config_differences(existing["config"], config):
      return existing
  held_out = _validation_indices(source, config["validation"], config["seed"])  # a bad count fails here
  # The shards' layout is part of the name: a partial build in an older layout is never resumed as this one.
  key = json.dumps(dict(config, shard_layout=build_lib.SHARD_LAYOUT), sort_keys=True)
  partial = f"{data_dir}.partial-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
  run = _Run(
    data_dir, partial, source, tokenizer, config, held_out, workers, process_index, process_count, label
  )
  agree = all_ok or (lambda ok: ok)
  primary = process_index == 0
  if primary:
    os.makedirs(os.path.dirname(data_dir), exist_ok=True)
  with build_lib.build_lock(data_dir) if primary else contextlib.nullcontext():
    _build_locked(run, on_mismatch, agree)
  return read_manifest(data_dir)


@dataclasses.dataclass
class _Run:
  data_dir: str
  partial: str
  source: Any
  tokenizer: Any
  config: dict[str, Any]
  held_out: Callable[[int], bool]
  workers: int
  process_index: int
  process_count: int
  label: str


def _together(agree: Callable[[bool], bool], step: str, fn: Callable[[], Any]) -> Any:
  """Runs this process's part of a step, then learns whether every process's part succeeded (a collective every
  process reaches, error or not), so that no process waits forever for one that failed."""
  result, error = None, None
  try:
    result = fn()
  except Exception as e:  # re-raised below, after every process has heard of it
    error = e
  everyone = agree(error is None)
  if error is not None:
    raise error
  if not everyone:
    raise build_lib.BuildError(f"another process failed while {step} (its log says why)")
  return result


def _build_locked(run: _Run, on_mismatch: str, agree: Callable[[bool], bool]) -> None:
  """Under the lock (process 0): process 0 decides (reuse, or build and replace), every process builds its
  shards, process 0 assembles and publishes; every step ends in a collective."""
  primary = run.process_index == 0

  def decide() -> None:
    if primary:  # a concurrent build may have published while this one waited for the lock
      existing = _reusable(run.data_dir, run.config, on_mismatch)
      if existing is None or config_differences(existing["config"], run.config):
        build_lib.open_partial(run.partial, run.config)

  _together(agree, "deciding whether to build", decide)
  # Process 0 holds the lock from its decision to its publication, so a manifest read here says what it decided.
  stored = read_manifest(run.data_dir)
  if stored is not None and not config_differences(stored["config"], run.config):
    return
  start = time.perf_counter()
  planned = _together(agree, "building its chunks", lambda: _build_shards(run))
  timings = {"shards_s": round(time.perf_counter() - start, 1), "workers": run.workers}

  def publish() -> None:
    if primary:
      timings["processes"] = run.process_count
      _assemble_and_publish(
        run.data_dir, run.partial, run.config, planned, timings, replace=stored is not None
      )

  _together(agree, "writing the dataset", publish)


def _reusable(data_dir: str, config: dict[str, Any], on_mismatch: str) -> dict[str, Any] | None:
  """The stored manifest (equal config: reuse it); raises on another configuration unless rebuilding."""
  existing = read_manifest(data_dir)
  if existing is None:
    return None
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
  return existing


def _build_shards(run: _Run) -> dict[str, int]:
  """This process's chunks into shard files; returns every split's number of chunks."""
  source, config, process_index, process_count = run.source, run.config, run.process_index, run.process_count
  before = build_lib.file_states(source)
  wanted = SPLITS if config["validation"] else ("train",)
  total = sum(f["bytes"] for f in config["source"].get("files", [])) or None
  who = f" [process {process_index}/{process_count}]" if process_count > 1 else ""
  progress = build_lib.Progress(f"{run.label}{who}", total)
  chunks = build_lib.plan_chunks(
    source, run.held_out, wanted, config["chunk_documents"], progress.read, max_chars=config["chunk_chars"]
  )
  try:
    planned = build_lib.build_shards(
      run.partial,
      chunks,
      run.tokenizer,
      config,
      record_features(config),
      workers=run.workers,
      mine=lambda chunk: chunk.index % process_count == process_index,
      progress=progress,
    )
  except FileNotFoundError:
    build_lib.file_states(source)  # a corpus file that vanished is named as such
    raise
  build_lib.check_unchanged(source, before)
  progress.maybe_print(force=True)
  return {split: planned.get(split, 0) for split in wanted}


def _assemble_and_publish(
  data_dir: str, partial: str, config, planned: dict[str, int], timings: dict[str, Any], replace: bool
) -> None:
  stale = [
    n
    for n in os.listdir(os.path.dirname(data_dir))
    if n.startswith(os.path.basename(data_dir) + ".incomplete-")
  ]
  if stale:
    logger.warning("leftovers of interrupted builds beside %s (safe to delete): %s", data_dir, stale)
  tmp = f"{data_dir}.incomplete-{uuid.uuid4().hex[:12]}"
  try:
    _build_into(tmp, partial, config, planned, timings)
    _publish(tmp, data_dir, config, replace=replace)
  finally:
    _remove(tmp)
  _remove(partial)


def _build_into(
  tmp: str,
  partial: str,
  config: dict[str, Any],
  planned: dict[str, int],
  timings: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """The TFDS dataset (every chunk's shard linked in, split by split in chunk order) and its manifest. `timings`:
  how long process 0's shards took (recorded in the manifest with the time the assembly took)."""
  start = time.perf_counter()
  names = record_features(config)
  with open(os.path.join(partial, "build.json"), encoding="utf-8") as f:
    if json.load(f) != config:  # pragma: no cover - the folder is named by the config's hash
      raise build_lib.BuildError(
        f"{partial} holds shards of another configuration; delete it and build again"
      )
  infos = {
    split: [build_lib.read_shard_info(partial, split, i) for i in range(n)] for split, n in planned.items()
  }
  missing = [
    build_lib.shard_info_path(partial, split, i)
    for split, per_chunk in infos.items()
    for i, info in enumerate(per_chunk)
    if info is None
  ]
  if missing:
    raise build_lib.BuildError(
      f"{len(missing)} chunk shards are missing, e.g. {missing[0]}: in a multi-host build every host must "
      "write data_dir.partial on a file system they all share (docs/scale.md)"
    )
  counts = {
    split: {key: sum(info[key] for info in per_chunk) for key in build_lib.COUNTS}
    for split, per_chunk in infos.items()
  }
  for split, split_counts in counts.items():
    if not split_counts["instances"]:
      raise ValueError(
        f"the {split} split has no instances ({split_counts['documents']} documents): the corpus is too "
        f"small for validation={config['validation']!r}, or its text tokenizes to nothing"
      )
  shards = {
    split: [
      (build_lib.shard_path(partial, split, i), info["instances"], info["bytes"])
      for i, info in enumerate(per_chunk)
    ]
    for split, per_chunk in infos.items()
  }
  builder_dir = tfds_shards.assemble(tmp, DATASET_NAME, build_lib.feature_specs(names), shards)
  manifest = {
    "config": config,
    "features": list(names),
    "tfds_dir": os.path.relpath(builder_dir, tmp),
    "splits": counts,
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "timings": dict(timings or {}, write_s=round(time.perf_counter() - start, 1)),
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
