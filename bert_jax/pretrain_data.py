"""What a pretraining run trains on: its phases (steps, sequence length, batch size, masked predictions),
the tokenizer (trained from the corpus when the config names none), each phase's array_record instances
and masking settings. Process 0 builds the tokenizer and instances once in the workdir; every process
reads them there."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax

from bert_jax import distributed, hub
from bert_jax.data import masking as masking_lib
from bert_jax.data import records, text
from bert_jax.run_control import TrainingError
from bert_jax.tokenization import Tokenizer, train_wordpiece

log = logging.getLogger("bert_jax.train")  # the runner's logger: these are steps of its run


@dataclasses.dataclass
class Phase:
  index: int
  start: int  # first global step of the phase
  steps: int
  max_seq_length: int
  batch_size: int
  max_predictions: int

  @property
  def stop(self) -> int:
    return self.start + self.steps


def phases_from_config(config) -> list[Phase]:
  """config.phases (a list of {steps, max_seq_length, batch_size, max_predictions}), or one phase from
  the top-level settings. The steps must add up to config.total_steps."""
  specs = list(config.phases) or [
    {
      "steps": config.total_steps,
      "max_seq_length": config.data.max_seq_length,
      "batch_size": config.batch_size,
      "max_predictions": config.data.masking.max_predictions,
    }
  ]
  phases, start = [], 0
  for i, spec in enumerate(specs):
    spec = dict(spec)
    unknown = sorted(set(spec) - {"steps", "max_seq_length", "batch_size", "max_predictions"})
    missing = sorted({"steps", "max_seq_length", "batch_size"} - set(spec))
    if unknown or missing:
      raise ValueError(
        f"config.phases[{i}]: unknown keys {unknown}, missing keys {missing}; a phase is "
        "{steps, max_seq_length, batch_size[, max_predictions]}"
      )
    if spec["steps"] <= 0:
      raise ValueError(f"config.phases[{i}].steps={spec['steps']}; expected a positive number")
    phases.append(
      Phase(
        i,
        start,
        int(spec["steps"]),
        int(spec["max_seq_length"]),
        int(spec["batch_size"]),
        int(spec.get("max_predictions", config.data.masking.max_predictions)),
      )
    )
    start += int(spec["steps"])
  if start != config.total_steps:
    raise ValueError(
      f"config.phases add up to {start} steps but config.total_steps={config.total_steps}; "
      f"make them agree (phase steps: {[p.steps for p in phases]})"
    )
  return phases


# --- tokenizer and data ------------------------------------------------------------------------


def load_or_train_tokenizer(config, workdir: str) -> Tokenizer:
  data = config.data
  if data.vocab:
    return (
      Tokenizer.from_pretrained(data.vocab)
      if os.path.isdir(data.vocab) or hub.is_hub(data.vocab)  # hf://ORG/NAME: a Hub model's tokenizer
      else Tokenizer.from_vocab(data.vocab, lowercase=data.lowercase)
    )
  vocab_dir = os.path.join(workdir, "vocab")
  vocab_file = os.path.join(vocab_dir, "vocab.txt")
  if not os.path.exists(vocab_file) and data.source.startswith(text.TFDS_PREFIX):
    raise ValueError(
      f"config.data.vocab is empty and the source {data.source!r} is a TFDS dataset; "
      "train a vocabulary from files (config.data.source=path) or give config.data.vocab"
    )
  # Process 0 alone decides whether to train (what another process sees may differ or lag), and every
  # process meets the barrier either way.
  if distributed.is_primary() and not os.path.exists(vocab_file):
    paths = text.expand_paths(data.source)
    log.info("training a WordPiece vocabulary of %d tokens on %s", data.vocab_size, paths)
    tokenizer = train_wordpiece(
      paths, vocab_size=data.vocab_size, lowercase=data.lowercase, limit_alphabet=data.vocab_limit_alphabet
    )
    tokenizer.save(vocab_dir)
  _barrier("vocab")
  require_shared(vocab_file, "the vocabulary")
  return Tokenizer.from_pretrained(vocab_dir)


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"bert_jax:{name}")


def all_processes_ok(ok: bool) -> bool:
  """Whether every process says ok (a collective: every process must call it, at the same point)."""
  if jax.process_count() == 1:
    return ok
  import numpy as np
  from jax.experimental import multihost_utils

  return bool(np.asarray(multihost_utils.process_allgather(np.array([ok], dtype=np.int32))).all())


def require_shared(path: str, what: str, wait_s: float = 90.0) -> None:
  """After a barrier, on a multi-process run: `path`, which process 0 has written, must be visible here. It is
  not when the workdir is on each host's own disk; say so rather than fail on a missing file. Waits up to
  `wait_s` first: a network file system may answer from a cache of misses for a while (Cloud Storage FUSE
  caches "not found" answers by default)."""
  if jax.process_count() == 1:
    return
  deadline = time.monotonic() + wait_s
  while not os.path.exists(path) and time.monotonic() < deadline:
    time.sleep(1.0)
  if not os.path.exists(path):
    raise TrainingError(
      f"process {jax.process_index()} cannot see {what} ({path}), which process 0 wrote: a multi-host run "
      "needs its workdir and data.data_dir on a file system every host shares (README, 'Cloud Storage')"
    )


def prepare_data(config, workdir: str, tokenizer: Tokenizer, phase: Phase, pair_task: str) -> str:
  """Builds (once) the array_record instances for a phase's sequence length; returns their folder. Every process
  builds its share of the chunks on `data.workers` cores (data/build.py); process 0 writes the dataset."""
  data = config.data
  data_dir = os.path.join(data.data_dir or os.path.join(workdir, "data"), f"seq{phase.max_seq_length}")
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()  # the build prints its own progress
  source = text.open_text_source(
    data.source,
    format=data.format or None,
    split=data.tfds_split,
    data_dir=data.tfds_data_dir or None,
    field=data.tfds_field,
  )
  records.build_pretraining_data(
    data_dir,
    source=source,
    tokenizer=tokenizer,
    max_seq_length=phase.max_seq_length,
    pair_task=pair_task,
    short_seq_prob=data.short_seq_prob,
    dupe_factor=data.dupe_factor,
    packing=data.packing,
    validation=data.validation,
    seed=config.seed,
    on_mismatch=data.on_mismatch,
    workers=data.workers,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    all_ok=all_processes_ok,
    label=f"building phase {phase.index} data (seq {phase.max_seq_length})",
  )
  require_shared(os.path.join(data_dir, records.MANIFEST), "the pretraining instances")
  return data_dir


def masking_config(config, phase: Phase) -> masking_lib.MaskingConfig:
  m = config.data.masking
  return masking_lib.MaskingConfig(
    rate=m.rate,
    max_predictions=phase.max_predictions,
    mode=m.mode,
    replace_with_mask=m.replace_with_mask,
    replace_with_random=m.replace_with_random,
    span_p=m.span_p,
    span_max=m.span_max,
  )


def build_data(config, workdir: str) -> dict[str, Any]:
  """config.job=build_data: the tokenizer and every phase's instances of a pretraining config, then stop; point a
  training run at them with --config.data.data_dir (data built on cheap machines before the pod starts)."""
  from bert_jax import objectives

  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  phases = phases_from_config(config)
  pair_task = objectives.pair_task(config.objective) or "none"
  tokenizer = load_or_train_tokenizer(config, workdir)
  built = {}
  for phase in phases:
    data_dir = prepare_data(config, workdir, tokenizer, phase, pair_task)
    splits = records.read_manifest(data_dir)["splits"]
    built[f"seq{phase.max_seq_length}"] = {"data_dir": data_dir, "splits": splits}
    if distributed.is_primary():
      counts = ", ".join(
        f"{split} {c['instances']:,} instances ({c['tokens']:,} tokens)" for split, c in splits.items()
      )
      print(f"phase {phase.index} (seq {phase.max_seq_length}): {data_dir}: {counts}", flush=True)
  if distributed.is_primary():
    data_root = config.data.data_dir or os.path.join(workdir, "data")
    print(f"data ready; train with --config.data.data_dir={data_root}", flush=True)
  return built
