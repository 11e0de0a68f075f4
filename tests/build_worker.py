"""One process of the 2-process pretraining-data build in test_build.py (not a test module itself).

JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i python tests/build_worker.py DATA_DIR CORPUS VOCAB ok|fail1
python tests/build_worker.py DATA_DIR CORPUS VOCAB race   # two independent jobs racing for one DATA_DIR
"""

import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from bert_jax import distributed  # noqa: E402
from bert_jax.pretrain_data import all_processes_ok  # noqa: E402
from bert_jax.data import records, text  # noqa: E402
from bert_jax.tokenization import Tokenizer  # noqa: E402
from tests.test_build import BUILD  # noqa: E402


def main(data_dir: str, corpus: str, vocab: str, mode: str) -> None:
  if mode == "race":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
  else:
    assert distributed.initialize("auto"), "the environment should describe a 2-process job"
  built = []
  original = records.build_lib.chunk_instances

  def counting(chunk, *args, **kwargs):
    built.append(chunk.index)
    if mode == "fail1" and jax.process_index() == 1:
      raise RuntimeError("simulated failure")
    if mode == "race" and len(built) == 1:
      time.sleep(3)  # the other job reaches the lock while this one builds
    return original(chunk, *args, **kwargs)

  records.build_lib.chunk_instances = counting
  records.build_pretraining_data(
    data_dir,
    source=text.LocalTextSource(corpus, format="lines"),
    tokenizer=Tokenizer.from_vocab(vocab),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    all_ok=all_processes_ok,
    **BUILD,
  )
  print("chunks built here:", sorted(built), flush=True)
  if mode != "race":
    assert built and all(i % 2 == jax.process_index() for i in built), built


if __name__ == "__main__":
  main(*sys.argv[1:])
