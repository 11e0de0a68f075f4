"""Pretraining-data builds (bert_jax/data/build.py): instances/s with 1 and 2 worker processes, interleaved, each
build in a fresh process; the records' sha256 (equal for every worker count); peak RSS of the building process and
of its largest worker; and a build killed with SIGKILL half-way and run again (its finished chunks reused), whose
records must equal the uninterrupted build's.

  .venv/bin/python experiments/benchmarks/build_bench.py --corpus ../shared/data/text/en_sotu.txt \\
      ../shared/data/text/en_wiki_vital_summaries.txt --rounds 2 --workers 1 2 --out /tmp/build_bench
  .venv/bin/python experiments/benchmarks/build_bench.py --corpus ... --kill-after 60 --workers 2 --out ...

The recipe is the issue's: format=paragraphs, MiniLM's vocabulary (uncased), seq 128, NSP, dupe_factor 5,
1% of documents held out, seed 0.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def build_once(corpus: list[str], data_dir: str, workers: int, dupe_factor: int) -> dict:
  """One build in this process; returns its figures."""
  from bert_jax.data import records, text
  from bert_jax.embed import bundled_minilm_path
  from bert_jax.tokenization import Tokenizer

  tokenizer = Tokenizer.from_vocab(os.path.join(bundled_minilm_path(), "vocab.txt"))
  start = time.perf_counter()
  manifest = records.build_pretraining_data(
    data_dir,
    source=text.LocalTextSource(corpus, format="paragraphs"),
    tokenizer=tokenizer,
    max_seq_length=128,
    pair_task="nsp",
    dupe_factor=dupe_factor,
    validation=0.01,
    seed=0,
    workers=workers,
  )
  seconds = time.perf_counter() - start
  instances = sum(s["instances"] for s in manifest["splits"].values())
  tokens = sum(s["tokens"] for s in manifest["splits"].values())
  return {
    "workers": workers,
    "seconds": seconds,
    "instances": instances,
    "tokens": tokens,
    "instances_per_s": instances / seconds,
    "timings": manifest.get("timings"),
    "records_sha256": records_digest(data_dir),
    "peak_rss_mib_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_rss_mib_largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
  }


def records_digest(data_dir: str) -> str:
  from bert_jax.data import records

  digest = hashlib.sha256()
  manifest = records.read_manifest(data_dir)
  for split in sorted(manifest["splits"]):
    _, source = records.open_split(data_dir, split)
    for start in range(0, len(source), 10_000):  # batched reads: one record at a time runs 20x slower
      for record in source.__getitems__(list(range(start, min(start + 10_000, len(source))))):
        for name in manifest["features"]:
          digest.update(np.asarray(record[name], dtype=np.int32).tobytes())
  return digest.hexdigest()


def _child(args, workers: int, data_dir: str) -> dict:
  command = [sys.executable, __file__, "--one", "--workers", str(workers), "--data-dir", data_dir]
  command += ["--dupe-factor", str(args.dupe_factor), "--corpus", *args.corpus]
  out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def interleaved(args) -> list[dict]:
  rows = []
  for r in range(args.rounds):
    for w in args.workers:
      data_dir = os.path.join(args.out, f"data_w{w}_r{r}")
      shutil.rmtree(data_dir, ignore_errors=True)
      row = dict(_child(args, w, data_dir), round=r)
      print(json.dumps(row), flush=True)
      rows.append(row)
      shutil.rmtree(data_dir, ignore_errors=True)
  return rows


def killed_and_resumed(args) -> dict:
  """A build killed with SIGKILL after --kill-after seconds, then the same command: chunks reused, same records."""
  w = args.workers[0]
  data_dir = os.path.join(args.out, "data_killed")
  shutil.rmtree(data_dir, ignore_errors=True)
  for old in glob.glob(data_dir + ".partial-*"):
    shutil.rmtree(old, ignore_errors=True)
  command = [sys.executable, __file__, "--one", "--workers", str(w), "--data-dir", data_dir]
  command += ["--dupe-factor", str(args.dupe_factor), "--corpus", *args.corpus]
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
  time.sleep(args.kill_after)
  os.killpg(proc.pid, signal.SIGKILL)  # the build and its workers, as a preempted VM would
  proc.wait()
  partials = glob.glob(data_dir + ".partial-*")
  # A finished chunk is its records and then its counts (.json); a record file alone was cut off mid-chunk.
  shards = (
    [n for n in os.listdir(os.path.join(partials[0], "shards")) if n.endswith(".json")] if partials else []
  )
  published = os.path.exists(data_dir)
  resumed = _child(args, w, data_dir)
  reference_dir = os.path.join(args.out, "data_reference")
  shutil.rmtree(reference_dir, ignore_errors=True)
  reference = _child(args, w, reference_dir)
  return {
    "killed_after_s": args.kill_after,
    "shards_kept": len(shards),
    "published_after_kill": published,
    "resumed": resumed,
    "uninterrupted": reference,
    "records_equal": resumed["records_sha256"] == reference["records_sha256"],
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus", nargs="+", required=True)
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--dupe-factor", type=int, default=5)
  parser.add_argument("--out", default="/tmp/build_bench")
  parser.add_argument(
    "--kill-after", type=float, default=0.0, help="seconds; > 0: the SIGKILL-and-resume check"
  )
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--data-dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    print(json.dumps(build_once(args.corpus, args.data_dir, args.workers[0], args.dupe_factor)), flush=True)
    return
  os.makedirs(args.out, exist_ok=True)
  mib = sum(os.path.getsize(p) for p in args.corpus) / 2**20
  print(f"corpus: {len(args.corpus)} files, {mib:.1f} MiB; cores: {os.cpu_count()}", flush=True)
  if args.kill_after > 0:
    print(json.dumps(killed_and_resumed(args)), flush=True)
    return
  rows = interleaved(args)
  digests = {r["records_sha256"] for r in rows}
  print(f"records identical across every build: {len(digests) == 1}", flush=True)
  by_round = {}
  for r in rows:
    by_round.setdefault(r["round"], {})[r["workers"]] = r["instances_per_s"]
  for rnd, speeds in sorted(by_round.items()):
    base = speeds.get(min(speeds))
    print(
      f"round {rnd}: "
      + ", ".join(f"{w} workers {s:,.0f}/s ({s / base:.2f}x)" for w, s in sorted(speeds.items()))
    )


if __name__ == "__main__":
  main()
