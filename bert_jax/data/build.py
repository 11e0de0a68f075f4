"""Building pretraining instances on every core and every host: the corpus in chunks of documents, each chunk's
records a pure function of its documents and seeds, each finished chunk kept as a shard file so an interrupted
build resumes where it stopped.

  data_dir.partial-<config hash>/ work in progress, kept across interruptions (never read as a dataset)
    build.json                    the build configuration the shards belong to
    shards/train-000012.array_record  one finished chunk's records, serialized as the dataset stores them
    shards/train-000012.json          its counts, written last: the chunk is finished when this exists
  data_dir.lock                   flock'd by process 0 from its decision to build until it publishes

A chunk is `chunk_documents` to 2 * chunk_documents - 1 consecutive documents of one split (the tail joins the
last chunk). Its seed is (seed, split, chunk index) only, so the records are the same bytes whatever the number
of worker processes (`data.workers`) or hosts, and a build can move between machines. Worker processes are
started with "spawn" (the runner's process holds JAX's threads, which fork would copy in a broken state) and get
the tokenizer once; chunks go to them a few at a time, so memory is bounded by the chunk size and the worker
count, not the corpus. In a multi-host job, process i builds chunks i, i + n, i + 2n, ...; process 0 then links
every shard into one TFDS dataset (data/tfds_shards.py), writes its manifest (records.py) and publishes it by one
rename: the records are serialized once, in parallel, and never read again by the build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import queue
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bert_jax.data import instances as instances_lib
from bert_jax.data import tfds_shards
from bert_jax.files import write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
COUNTS = ("documents", "sentences", "instances", "tokens")
_CHUNK_TAG = 0x63686E6B  # "chnk": chunk seeds never coincide with other streams of the same seed
_SPELLED_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
_TOKENIZE_BATCH = 1000  # sentences per tokenizer call: enough for the engine's threads
PROGRESS_SECONDS = 30.0
SHARD_LAYOUT = 2  # 2: TFDS-serialized array_record records + a JSON of counts per chunk (1: npz)


class BuildError(ValueError):
  """A build that cannot go on: names the chunk, the file or the setting."""


@dataclasses.dataclass
class Chunk:
  split: str
  index: int
  first_document: int  # the source's index of the chunk's first document
  documents: list[list[str]]

  def describe(self) -> str:
    first = next((s for s in self.documents[0] if s.strip()), "") if self.documents else ""
    return (
      f"chunk {self.index} of the {self.split} split ({len(self.documents)} documents from document "
      f"#{self.first_document}, which begins {first[:60]!r})"
    )


# -------------------------------------------------------------------------------------------------
# The plan: documents into chunks.


def plan_chunks(
  source,
  held_out: Callable[[int], bool],
  wanted: tuple[str, ...],
  size: int,
  progress: dict | None = None,
  max_chars: int = 0,
) -> Iterator[Chunk]:
  """The source's documents, in order, as each wanted split's chunks. A chunk is full at `size` documents or
  `max_chars` characters (0: no limit), whichever comes first, and has at least 2 documents (NSP pairs across
  documents); the split's tail, which is itself full or all there is, is the last chunk: a chunk is cut off the
  buffer only once what follows it is full too. Size limits in characters keep chunks of long documents (a
  speech, a book) as small as those of short ones, so workers share the work evenly."""
  plans = {split: _ChunkPlan(split, size, max_chars) for split in wanted}
  for index, doc in enumerate(source.documents()):
    split = "validation" if held_out(index) else "train"
    if progress is not None:
      progress["documents_read"] += 1
      progress["bytes_read"] += sum(len(s.encode("utf-8")) for s in doc) + len(doc)
    if split in plans:
      yield from plans[split].add(index, doc)
  for split in wanted:
    yield from plans[split].finish()


class _ChunkPlan:
  """One split's chunking: a head (the next chunk, once full) and the rest after it."""

  def __init__(self, split: str, size: int, max_chars: int):
    self.split, self.size, self.max_chars = split, size, max_chars
    self.buffer: list[tuple[int, list[str]]] = []
    self.cut: int | None = None  # where the head ends once it is full
    self.rest = [0, 0]  # documents and characters after the head (or in the head, before it is full)
    self.made = 0

  def _full(self, documents: int, chars: int) -> bool:
    return documents >= 2 and (documents >= self.size or (self.max_chars > 0 and chars >= self.max_chars))

  def add(self, index: int, doc: list[str]) -> Iterator[Chunk]:
    self.buffer.append((index, doc))
    self.rest[0] += 1
    self.rest[1] += sum(len(s) for s in doc)
    if not self._full(*self.rest):
      return
    if self.cut is None:  # the head just became full: what comes next is the rest
      self.cut, self.rest = len(self.buffer), [0, 0]
      return
    yield self._chunk(self.buffer[: self.cut])
    self.buffer = self.buffer[self.cut :]
    self.cut, self.rest = len(self.buffer), [0, 0]  # the full rest is the new head

  def finish(self) -> Iterator[Chunk]:
    if self.buffer:
      yield self._chunk(self.buffer)

  def _chunk(self, items: list[tuple[int, list[str]]]) -> Chunk:
    self.made += 1
    return Chunk(self.split, self.made - 1, items[0][0], [doc for _, doc in items])


# -------------------------------------------------------------------------------------------------
# One chunk: its documents to instances.


def _token_ids(chunk: Chunk, tokenizer, counts: dict[str, int]) -> list[list[np.ndarray]]:
  """The chunk's documents as lists of int32 sentence ids; empty sentences and documents dropped."""
  # The tokenizer keeps "[SEP]" etc. whole wherever text spells them (as transformers does). In a corpus such a
  # token is text, and a stray [SEP] or [CLS] would break the instance layout, so they become [UNK]. [UNK]
  # itself stays: it is ordinary text to BERT.
  specials = np.array([i for i, t in enumerate(tokenizer.vocab) if t in _SPELLED_SPECIALS])
  flat = [s for doc in chunk.documents for s in doc]
  ids = []
  for start in range(0, len(flat), _TOKENIZE_BATCH):
    # The tokenizer's own batch call, without [CLS]/[SEP] (stripped): text is handled as at fine-tuning time.
    encoded = tokenizer(flat[start : start + _TOKENIZE_BATCH], padding=False, truncation=False)
    for row in encoded["input_ids"]:
      row = np.asarray(row[1:-1], dtype=np.int32)
      row[np.isin(row, specials)] = tokenizer.unk_id
      ids.append(row)
  documents, k = [], 0
  for doc in chunk.documents:
    sentences = [s for s in ids[k : k + len(doc)] if len(s)]
    k += len(doc)
    if sentences:
      counts["documents"] += 1
      counts["sentences"] += len(sentences)
      documents.append(sentences)
  return documents


def chunk_instances(chunk: Chunk, tokenizer, config: dict[str, Any]) -> tuple[list[dict], dict[str, int]]:
  """(instances, counts) of one chunk: a pure function of the chunk, the tokenizer and the build config."""
  counts = dict.fromkeys(COUNTS, 0)
  documents = _token_ids(chunk, tokenizer, counts)
  if not documents:
    return [], counts
  if config["packing"]:
    packed = instances_lib.pack_documents(
      documents, max_seq_length=config["max_seq_length"], cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id
    )
    made = packed * config["dupe_factor"]  # packing draws nothing at random: duplicates are equal
  else:
    split_id = SPLITS.index(chunk.split)
    seed = int(
      np.random.SeedSequence([_CHUNK_TAG, config["seed"], split_id, chunk.index]).generate_state(1)[0]
    )
    made = instances_lib.create_all_instances(
      documents,
      dupe_factor=config["dupe_factor"],
      seed=seed,
      max_seq_length=config["max_seq_length"],
      short_seq_prob=config["short_seq_prob"],
      pair_task=config["pair_task"],
      cls_id=tokenizer.cls_id,
      sep_id=tokenizer.sep_id,
    )
  counts["instances"] = len(made)
  counts["tokens"] = sum(len(x["tokens"]) for x in made)
  return made, counts


# -------------------------------------------------------------------------------------------------
# Shard files.


def shard_path(partial_dir: str, split: str, index: int) -> str:
  """One finished chunk's records, serialized as the dataset stores them (array_record): publishing links the
  file into the dataset instead of passing its records through one process again."""
  return os.path.join(partial_dir, "shards", f"{split}-{index:06d}.array_record")


def shard_info_path(partial_dir: str, split: str, index: int) -> str:
  """The chunk's counts and record bytes, written after its records: a chunk is finished when this exists."""
  return os.path.join(partial_dir, "shards", f"{split}-{index:06d}.json")


def feature_specs(names: tuple[str, ...]) -> dict[str, Any]:
  """The dataset's TFDS features: a scalar for the label, variable-length int32 rows for the rest (unpadded)."""
  import tensorflow_datasets as tfds  # heavy; imported where records are written

  return {n: tfds.features.Tensor(shape=() if n == "pair_label" else (None,), dtype=np.int32) for n in names}


def write_shard(
  partial_dir: str, split: str, index: int, made: list[dict], counts: dict[str, int], encode
) -> None:
  """One chunk's instances (`encode`: a tfds_shards.Encoder of the dataset's features) and then its counts."""
  path = shard_path(partial_dir, split, index)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  names = tuple(encode.features.keys())
  records = (encode({n: np.asarray(x[n], dtype=np.int32) for n in names}) for x in made)
  _, size = tfds_shards.write_records(path, records)
  write_json(shard_info_path(partial_dir, split, index), dict(counts, bytes=size))


def read_shard_info(partial_dir: str, split: str, index: int) -> dict[str, int] | None:
  """A finished chunk's counts (and `bytes`); None when the chunk is not finished."""
  try:
    with open(shard_info_path(partial_dir, split, index), encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None


# -------------------------------------------------------------------------------------------------
# Running chunks: in this process or in worker processes.

_WORKER: dict[str, Any] = {}


def _init_worker(
  tokenizer, config: dict[str, Any], names: tuple[str, ...], partial_dir: str, threads: int = 0
) -> None:
  if threads:  # before the engine's first batch starts its thread pool
    os.environ["RAYON_NUM_THREADS"] = str(threads)
  _WORKER.update(tokenizer=tokenizer, config=config, names=names, partial_dir=partial_dir, encode=None)


def _run_chunk(chunk: Chunk) -> dict[str, int]:
  """Builds one chunk into its shard file (in a worker or inline); returns its counts."""
  # Made in the worker: TFDS's feature objects do not travel to spawned processes.
  if _WORKER["encode"] is None:
    _WORKER["encode"] = tfds_shards.Encoder(feature_specs(_WORKER["names"]))
  made, counts = chunk_instances(chunk, _WORKER["tokenizer"], _WORKER["config"])
  write_shard(_WORKER["partial_dir"], chunk.split, chunk.index, made, counts, _WORKER["encode"])
  return counts


def available_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS
    return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
  """data.workers: 0 = every core; more than the cores is allowed (with a note)."""
  if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
    raise BuildError(f"data.workers={workers!r}; expected 0 (every core) or a number of worker processes")
  cores = available_cores()
  if workers > cores:
    logger.warning(
      "data.workers=%d is more than this machine's %d cores: chunks will share cores", workers, cores
    )
  return int(workers) or cores


class Progress:
  """A line every PROGRESS_SECONDS: documents read, chunks and instances done, instances/s, ETA (by bytes read
  of a file source's total)."""

  def __init__(self, label: str, total_bytes: int | None, every: float = PROGRESS_SECONDS):
    self.label, self.total_bytes, self.every = label, total_bytes, every
    self.start = self.last = time.monotonic()
    self.read = {"documents_read": 0, "bytes_read": 0}
    self.chunks = self.reused = self.instances = 0

  def done(self, counts: dict[str, int], reused: bool = False) -> None:
    self.chunks += 1
    self.reused += reused
    self.instances += counts["instances"]
    self.maybe_print()

  def maybe_print(self, force: bool = False) -> None:
    now = time.monotonic()
    if not force and now - self.last < self.every:
      return
    self.last = now
    elapsed = max(now - self.start, 1e-9)
    eta = "unknown"
    if self.total_bytes and self.read["bytes_read"]:
      fraction = min(self.read["bytes_read"] / self.total_bytes, 1.0)
      eta = (
        f"{elapsed * (1 - fraction) / max(fraction, 1e-9) / 60:.1f} min" if fraction < 1 else "reading done"
      )
    print(
      f"{self.label}: {self.read['documents_read']:,} documents read, {self.chunks:,} chunks done "
      f"({self.reused:,} reused), {self.instances:,} instances, {self.instances / elapsed:,.0f} instances/s, "
      f"{elapsed / 60:.1f} min, ETA {eta}",
      flush=True,
    )


def build_shards(
  partial_dir: str,
  chunks: Iterator[Chunk],
  tokenizer,
  config: dict[str, Any],
  names: tuple[str, ...],
  *,
  workers: int,
  mine: Callable[[Chunk], bool],
  progress: Progress,
) -> dict[str, int]:
  """Every chunk `mine` accepts, built into its shard file unless it is there already; returns the number of
  chunks of each split in the whole plan (every process's). With workers > 1 this process is one of them (see
  `_Helpers`). The spawned workers start with the second chunk to build: a corpus of one chunk is built here,
  without their start-up."""
  _init_worker(tokenizer, config, names, partial_dir)
  planned: dict[str, int] = {}
  first: Chunk | None = None  # held until a second chunk shows that starting the workers pays
  helpers: _Helpers | None = None
  try:
    for chunk in chunks:
      planned[chunk.split] = chunk.index + 1
      if not mine(chunk) or _reused(chunk, partial_dir, progress):
        continue
      if workers == 1:
        _run_here(chunk, progress)
        continue
      if helpers is None and first is None:
        first = chunk
        continue
      if helpers is None:
        # The engine's threads share the cores out between the processes: more would only wait on each other.
        initargs = (tokenizer, config, names, partial_dir, max(1, available_cores() // workers))
        helpers = _Helpers(workers - 1, initargs, progress)
        helpers.give(first)
        first = None
      helpers.give(chunk)
    if first is not None:
      _run_here(first, progress)
    if helpers is not None:
      helpers.finish()
  finally:
    if helpers is not None:
      helpers.close()
  return planned


def _helper_loop(tasks, results, initargs) -> None:
  """A spawned worker: chunks from `tasks` until None, each one's outcome to `results`."""
  _init_worker(*initargs)
  while (chunk := tasks.get()) is not None:
    try:
      results.put(("done", chunk.split, chunk.index, _run_chunk(chunk)))
    except Exception as e:  # noqa: BLE001  (sent to the parent, which names the chunk and stops the build)
      results.put(("failed", chunk.split, chunk.index, f"{type(e).__name__}: {e}"))


class _Helpers:
  """workers - 1 spawned processes and this one, building chunks from one queue: this process hands chunks out
  while at most two per helper wait, builds the next one itself when that many do, and once every chunk is
  handed out takes back the queued ones no helper has started, so the build ends with every process busy.
  Memory follows the number of processes and the chunk size, not the corpus."""

  def __init__(self, count: int, initargs: tuple, progress: Progress):
    context = multiprocessing.get_context("spawn")  # fork would copy the runner's JAX threads broken
    self.tasks, self.results, self.progress = context.Queue(), context.Queue(), progress
    self.waiting: dict[tuple[str, int], Chunk] = {}  # handed out, no outcome yet
    self.limit = 2 * count
    self.processes = [
      context.Process(target=_helper_loop, args=(self.tasks, self.results, initargs), daemon=True)
      for _ in range(count)
    ]
    for process in self.processes:
      process.start()

  def give(self, chunk: Chunk) -> None:
    self._collect(block=False)
    if len(self.waiting) >= self.limit:
      _run_here(chunk, self.progress)
      return
    self.waiting[chunk.split, chunk.index] = chunk
    self.tasks.put(chunk)

  def finish(self) -> None:
    """Builds here what no helper has taken, then waits for the helpers' outcomes."""
    while True:
      try:
        chunk = self.tasks.get(timeout=0.05)
      except queue.Empty:
        break
      del self.waiting[chunk.split, chunk.index]
      _run_here(chunk, self.progress)
    while self.waiting:
      self._collect(block=True)

  def _collect(self, block: bool) -> None:
    while self.waiting:
      try:
        outcome, split, index, value = self.results.get(timeout=1.0 if block else 0.0)
      except queue.Empty:
        self.progress.maybe_print()
        dead = [p.exitcode for p in self.processes if p.exitcode is not None]
        if dead:
          chunks = ", ".join(c.describe() for c in self.waiting.values())
          raise BuildError(f"a worker process died (exit code {dead[0]}) while building one of: {chunks}")
        if not block:
          return
        continue
      chunk = self.waiting.pop((split, index))
      if outcome == "failed":
        raise BuildError(f"building {chunk.describe()} failed: {value}")
      self.progress.done(value)
      if block:
        return

  def close(self) -> None:
    for _ in self.processes:
      with contextlib.suppress(Exception):
        self.tasks.put(None)
    for process in self.processes:
      process.join(timeout=5)
      if process.is_alive():  # a build that failed elsewhere: its chunk is not worth waiting for
        process.terminate()
        process.join()


def _reused(chunk: Chunk, partial_dir: str, progress: Progress) -> bool:
  """True when the chunk's shard is there already (a resumed build)."""
  counts = read_shard_info(partial_dir, chunk.split, chunk.index)
  if counts is None:
    return False
  progress.done(counts, reused=True)
  return True


def _run_here(chunk: Chunk, progress: Progress) -> None:
  try:
    counts = _run_chunk(chunk)
  except Exception as e:
    raise BuildError(f"building {chunk.describe()} failed: {type(e).__name__}: {e}") from e
  progress.done(counts)


# -------------------------------------------------------------------------------------------------
# The work folder.


def open_partial(partial_dir: str, config: dict[str, Any]) -> None:
  """Makes data_dir.partial-<hash> ready for this build: kept when it holds shards of this configuration (a
  resumed build); the unfinished builds of other configurations beside it are deleted (under the lock, no other
  build is running)."""
  prefix = partial_dir.rsplit(".partial-", 1)[0] + ".partial-"
  parent = os.path.dirname(partial_dir)
  for name in os.listdir(parent):
    other = os.path.join(parent, name)
    if other.startswith(prefix) and other != partial_dir:
      logger.warning("deleting %s, an unfinished build of another configuration", other)
      shutil.rmtree(other, ignore_errors=True)
  path = os.path.join(partial_dir, "build.json")
  if os.path.isfile(path):
    try:
      with open(path, encoding="utf-8") as f:
        stored = json.load(f)
    except (OSError, json.JSONDecodeError):
      stored = None
    if stored == config:
      shards = os.path.join(partial_dir, "shards")
      kept = len(os.listdir(shards)) if os.path.isdir(shards) else 0
      logger.warning("resuming the build in %s: %d finished chunks kept", partial_dir, kept)
      return
  shutil.rmtree(partial_dir, ignore_errors=True)
  os.makedirs(os.path.join(partial_dir, "shards"), exist_ok=True)
  write_json(path, config)


@contextlib.contextmanager
def build_lock(data_dir: str) -> Iterator[None]:
  """One deciding-building-publishing process 0 for data_dir at a time on this file system (an advisory flock; a
  second build waits, then finds the data published and reuses it). The lock file stays: deleting it would let a
  waiter and a newcomer both hold "the" lock. Without fcntl (Windows) there is no lock."""
  try:
    import fcntl
  except ImportError:  # pragma: no cover
    yield
    return
  with open(f"{data_dir}.lock", "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logger.warning("another process is building %s: waiting for it", data_dir)
      fcntl.flock(f, fcntl.LOCK_EX)
    except OSError as e:  # a file system without locks (some FUSE mounts): racing builds still publish safely
      logger.warning("no lock on %s.lock (%s); building without one", data_dir, e)
      yield
      return
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def file_states(source) -> dict[str, tuple[int, int]] | None:
  """(size, mtime) of a file source's files, to notice a corpus that changes while it is read."""
  paths = getattr(source, "paths", None)
  if paths is None:
    return None
  states = {}
  for path in paths:
    try:
      st = os.stat(path)
    except FileNotFoundError:
      raise BuildError(f"corpus file {path} vanished while the build was reading the corpus") from None
    states[path] = (st.st_size, st.st_mtime_ns)
  return states


def check_unchanged(source, before: dict[str, tuple[int, int]] | None) -> None:
  after = file_states(source)
  if before is None or after is None:
    return
  for path, state in before.items():
    if after.get(path) != state:
      raise BuildError(
        f"corpus file {path} changed while the build was reading it (size, mtime {state} -> {after.get(path)}): "
        "the records would mix two versions of it; run the build again once the file is final"
      )
