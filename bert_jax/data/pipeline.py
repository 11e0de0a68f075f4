"""grain input pipelines over the stored pretraining instances: per-process, deterministic, resumable.

The stream is a pure function of (seed, process_index, process_count, position), built from
index arithmetic only:

  record indices 0..n-1 of the split (the first `rows` of them, if given)
  -> this process's shard: indices process_index, process_index + process_count, ... (the shard is
     cut to n // process_count records so every process has the same count and hosts never fall out of
     step at the end of a finite run)
  -> shuffled per epoch (a new permutation each epoch, from the seed and the epoch number)
  -> repeated num_epochs times (None: forever)
  -> read + masked: rng = masking_rng(seed, record_index) for static masking (BERT: a record has
     the same masks every epoch), masking_rng(seed, record_index, epoch) for dynamic (RoBERTa)
  -> batched to global_batch_size // process_count rows (a partial last batch is dropped).

`iter(dataset)` is a `grain.DatasetIterator`: its `get_state()` is a small dict (the position in
the stream) and `set_state()` on a fresh iterator of the same dataset resumes exactly where the
saved one was. In an Orbax CheckpointManager:

  mngr.save(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(it)))
  mngr.restore(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointRestore(it)))

Each process saves its own iterator state; the stream depends on process_count, so resuming with
another number of processes starts a different (still deterministic) stream.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import numpy as np

from bert_jax.data import masking as masking_lib
from bert_jax.data import records

_SHUFFLE_TAG = 0x73686666  # "shff": the shuffle seed never equals another stream's seed
# Threads read and mask records ahead of the consumer. grain's default buffer is 500 elements, and
# an element here is a whole batch: 32 keeps the input well ahead of a train step without holding
# hundreds of batches in memory.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=16, prefetch_buffer_size=32)


@dataclasses.dataclass(frozen=True, eq=False)
class VocabInfo:
  """What masking needs to know about the vocabulary.

  special_ids and is_continuation are boolean arrays over the vocab (see masking.vocab_lookups);
  vocab_sha256 (records.vocab_fingerprint), when given, must match the vocab the data was built with.
  """

  vocab_size: int
  mask_id: int
  special_ids: np.ndarray
  is_continuation: np.ndarray
  pad_id: int = 0
  vocab_sha256: str | None = None

  @classmethod
  def from_tokenizer(cls, tokenizer) -> VocabInfo:
    is_special, is_continuation = masking_lib.vocab_lookups(tokenizer.vocab)
    return cls(
      vocab_size=len(tokenizer.vocab),
      mask_id=tokenizer.mask_id,
      special_ids=is_special,
      is_continuation=is_continuation,
      pad_id=tokenizer.pad_id,
      vocab_sha256=records.vocab_fingerprint(tokenizer),
    )


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if (process_index is None) != (process_count is None):
    raise ValueError(
      f"process_index={process_index!r} and process_count={process_count!r}: give both or neither "
      "(neither asks jax for them)"
    )
  if process_index is None:
    import jax  # only here: the pipeline itself runs without an initialized backend

    process_index, process_count = jax.process_index(), jax.process_count()
  if not (isinstance(process_count, (int, np.integer)) and process_count >= 1):
    raise ValueError(f"process_count={process_count!r}; expected an integer >= 1")
  if not (isinstance(process_index, (int, np.integer)) and 0 <= process_index < process_count):
    raise ValueError(f"process_index={process_index!r}; expected an integer in [0, {process_count})")
  return int(process_index), int(process_count)


def _per_process_batch(global_batch_size: int, process_count: int) -> int:
  if not (isinstance(global_batch_size, (int, np.integer)) and global_batch_size >= 1):
    raise ValueError(f"global_batch_size={global_batch_size!r}; expected an integer >= 1")
  if global_batch_size % process_count:
    raise ValueError(
      f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}; "
      "each process loads global_batch_size // process_count rows"
    )
  return global_batch_size // process_count


def _open(data_dir, split, vocab: VocabInfo, max_seq_length: int, rows: int | None):
  manifest, source = records.open_split(data_dir, split)
  config = manifest["config"]
  where = os.fspath(data_dir)
  if max_seq_length != config["max_seq_length"]:
    raise ValueError(
      f"max_seq_length={max_seq_length}, but the data in {where!r} was built with "
      f"max_seq_length={config['max_seq_length']}; rebuild it or use that length"
    )
  if vocab.vocab_size != config["vocab_size"]:
    raise ValueError(
      f"the vocabulary has {vocab.vocab_size} tokens, but the data in {where!r} was built with one of "
      f"{config['vocab_size']}; token ids would mean other tokens"
    )
  if vocab.vocab_sha256 is not None and vocab.vocab_sha256 != config["vocab_sha256"]:
    raise ValueError(
      f"the data in {where!r} was built with another vocabulary (sha256 {config['vocab_sha256'][:12]}..., "
      f"this one is {vocab.vocab_sha256[:12]}...); rebuild it with this tokenizer"
    )
  n = len(source)
  if rows is not None:
    if not (isinstance(rows, (int, np.integer)) and 1 <= rows):
      raise ValueError(f"rows={rows!r}; expected an integer >= 1 (records to use) or None (all)")
    n = min(n, int(rows))
  return source, n


def _masker(source, *, seed: int, masking: masking_lib.MaskingConfig, vocab: VocabInfo):
  def example(record_index: int, epoch: int | None) -> dict[str, Any]:
    record = source[record_index]
    masked = masking_lib.mask_instance(
      record["tokens"],
      config=masking,
      vocab_size=vocab.vocab_size,
      mask_id=vocab.mask_id,
      special_ids=vocab.special_ids,
      is_continuation=vocab.is_continuation,
      rng=masking_lib.masking_rng(seed, record_index, epoch),
      pad_id=vocab.pad_id,
    )
    # Span boundaries vary in number per row and are not batched (batch_features drops them).
    masked.pop("spans", None)
    return {**record, **masked}

  return example


def make_dataset(
  data_dir: str | os.PathLike,
  split: str = "train",
  *,
  global_batch_size: int,
  seed: int,
  masking: masking_lib.MaskingConfig,
  vocab: VocabInfo,
  max_seq_length: int,
  dynamic_masking: bool = True,
  shuffle: bool = True,
  num_epochs: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  rows: int | None = None,
  read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
  """The training stream: batches of global_batch_size // process_count rows, as numpy dicts.

  Keys: input_ids, attention_mask, token_type_ids (int32, (B, L)); masked_positions, masked_ids
  (int32, (B, P)), masked_weights (float32, (B, P)); nsp_labels (int32, (B,)) when the data has a
  pair task; segment_ids and position_ids (int32, (B, L)) when it is packed.

  process_index / process_count: this process's place among the hosts (default: jax's). rows: use
  only the first `rows` records of the split (quick runs). See the module docstring for the order
  of operations and for checkpointing the iterator.
  """
  process_index, process_count = _process(process_index, process_count)
  batch_size = _per_process_batch(global_batch_size, process_count)
  if num_epochs is not None and not (isinstance(num_epochs, (int, np.integer)) and num_epochs >= 1):
    raise ValueError(f"num_epochs={num_epochs!r}; expected an integer >= 1 or None (repeat forever)")
  source, n = _open(data_dir, split, vocab, max_seq_length, rows)
  shard_len = n // process_count
  if shard_len < batch_size:
    raise ValueError(
      f"the {split} split of {os.fspath(data_dir)!r} has {n} records: {shard_len} per process, fewer "
      f"than one batch of {batch_size}; use a smaller batch or more data"
    )
  example = _masker(source, seed=seed, masking=masking, vocab=vocab)

  ds = grain.MapDataset.range(n)[process_index::process_count][:shard_len]
  if shuffle:
    shuffle_seed = int(np.random.SeedSequence([_SHUFFLE_TAG, int(seed)]).generate_state(1)[0])
    ds = ds.shuffle(seed=shuffle_seed)
  ds = ds.repeat(num_epochs)
  # After repeat the index runs across epochs, so index // shard_len is the epoch.
  ds = ds.map_with_index(lambda j, i: example(int(i), j // shard_len if dynamic_masking else None))
  ds = ds.batch(
    batch_size, drop_remainder=True, batch_fn=lambda rows_: masking_lib.batch_features(rows_, max_seq_length)
  )
  return ds.to_iter_dataset(read_options or DEFAULT_READ_OPTIONS)


def make_eval_dataset(
  data_dir: str | os.PathLike,
  split: str = "validation",
  *,
  global_batch_size: int,
  seed: int,
  masking: masking_lib.MaskingConfig,
  vocab: VocabInfo,
  max_seq_length: int,
  process_index: int | None = None,
  process_count: int | None = None,
  rows: int | None = None,
  read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
  """One pass over every record, in order, with static masks (the same every evaluation).

  Every record is read exactly once across the processes (process p reads p, p + count, ...),
  and every process yields the same number of batches, ceil(ceil(n / count) / rows per batch), so
  the hosts stay in step. Rows that fill out the last batches are copies of a real record (so no
  row is all padding, which some attention kernels turn into NaN) with masked_weights 0. Each batch
  also has `valid` (int32, (B,)): 1 for real rows, 0 for filler; weight per-example metrics such as
  NSP accuracy by it (masked-LM metrics are already weighted by masked_weights).
  """
  process_index, process_count = _process(process_index, process_count)
  batch_size = _per_process_batch(global_batch_size, process_count)
  source, n = _open(data_dir, split, vocab, max_seq_length, rows)
  per_process = -(-n // process_count)
  padded = -(-per_process // batch_size) * batch_size
  mine = list(range(process_index, n, process_count))
  filler = mine[0] if mine else 0
  example = _masker(source, seed=seed, masking=masking, vocab=vocab)

  def row(k: int) -> dict[str, Any]:
    if k < len(mine):
      item = example(mine[k], None)
      item["valid"] = 1
    else:
      item = example(filler, None)
      item["masked_weights"] = np.zeros_like(item["masked_weights"])
      item["valid"] = 0
    return item

  def batch_fn(items):
    out = masking_lib.batch_features(items, max_seq_length)
    out["valid"] = np.array([item["valid"] for item in items], dtype=np.int32)
    return out

  ds = grain.MapDataset.range(padded).map(row).batch(batch_size, drop_remainder=False, batch_fn=batch_fn)
  return ds.to_iter_dataset(read_options or DEFAULT_READ_OPTIONS)
