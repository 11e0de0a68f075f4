"""Evaluation throughput of the fine-tuning runner on real data: its three ways of running an evaluation set,
in one process, interleaved by round, on the same examples.

- `full rows`: every batch padded to max_seq_length (the runner's unpacked evaluation before length buckets;
  `finetune._predict_full_rows`, which still serves packed rows);
- `length buckets`: the unpacked evaluation now (`finetune.predict_outputs`): rows longest first, each batch
  cut to its own power-of-two length (`batching.run_by_length`);
- `packed`: `config.data.packing=True`'s evaluation (`predict_outputs(..., packed=True)`).

The encoder is the bundled all-MiniLM-L6-v2 (or --model) with a new, untrained task head: the outputs are
compared between the three ways (largest difference at real tokens, and the task metric each gives), not
judged for accuracy. Throughput = real (non-pad) tokens of the set / seconds of a warm pass; the first pass
(compiles included) is reported apart.

  .venv/bin/python experiments/finetune_sentiment/prepare.py \
      ../shared/data/classification/sentiment_movie_rt.jsonl SPLIT
  .venv/bin/python experiments/benchmarks/eval_bench.py --task sentiment --data SPLIT/validation.jsonl \
      --max-seq-length 128 --out OUT
  .venv/bin/python experiments/benchmarks/eval_bench.py --task squad \
      --data ../shared/data/qa/squad_v1.1_dev.json --max-examples 500 --out OUT
  .venv/bin/python experiments/benchmarks/eval_bench.py --task pos \
      --data ../shared/data/tagging/pos_en_brown.jsonl --max-examples 2000 --out OUT

Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)

import bert_jax  # noqa: E402

bert_jax.hostmem.keep_freed_memory()  # as the runner does, before JAX starts its threads
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bert_jax import finetune, sharding, train_state  # noqa: E402
from bert_jax.data import finetune_data  # noqa: E402
from bert_jax.models import task_model  # noqa: E402
from configs import common  # noqa: E402
from configs import finetune as finetune_configs  # noqa: E402

TASKS = {"sentiment": ("classification", 128), "squad": ("span", 384), "pos": ("tagging", 128)}
WAYS = ("full rows", "length buckets", "packed")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", choices=sorted(TASKS), required=True)
  p.add_argument("--data", required=True, help="the evaluation file (JSON lines; SQuAD: its JSON)")
  p.add_argument("--out", required=True)
  p.add_argument("--model", default="", help="checkpoint folder (default: the bundled all-MiniLM-L6-v2)")
  p.add_argument("--max-seq-length", type=int, default=0, help="default: 128 (sentiment, pos), 384 (squad)")
  p.add_argument("--max-examples", type=int, default=0, help="0: the whole file")
  p.add_argument("--batch-size", type=int, default=64, help="the runner's eval_batch_size")
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args(argv)
  args.max_seq_length = args.max_seq_length or TASKS[args.task][1]
  return args


def task_config(args, model_dir):
  kind = TASKS[args.task][0]
  config = finetune_configs.get_config("task=" + kind)
  config.unlock()
  config.init_from = model_dir
  config.data.train = config.data.validation = args.data
  config.data.max_seq_length = args.max_seq_length
  config.data.max_train_examples = 1  # the training split is not used
  config.data.max_eval_examples = args.max_examples
  if kind == "tagging":
    config.metric = "token_accuracy"  # POS tags have no entities
  config.eval_batch_size = args.batch_size
  config.lock()
  return config


def main(argv=None):
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  from bert_jax.embed import bundled_minilm_path

  model_dir = args.model or bundled_minilm_path()
  config = task_config(args, model_dir)
  _, loaded = finetune.load_encoder(config)
  data = finetune_data.load_task_data(config, loaded.tokenizer)
  eval_set = data.evals[0]
  mesh, rules = sharding.from_config(common.mesh_config("dp"))
  model = task_model(loaded.config, data.kind, len(data.labels))
  state, shardings = train_state.create_train_state(model, optax.identity(), mesh, rules, seed=config.seed)
  shared = finetune.Shared(config.init_from, loaded.config, jax.device_get(loaded.params["bert"]), None, data)
  params = finetune._init_params(state, shared).params
  step = finetune.make_predict_step(model, data.kind, mesh, rules, shardings.params)
  features = {k: v for k, v in eval_set.features.items() if k in train_state.MODEL_INPUTS}
  n, width = features["input_ids"].shape[0], features["input_ids"].shape[-1]
  real = int(features["attention_mask"].sum())
  ways = {
    "full rows": lambda: finetune._predict_full_rows(step, params, features, args.batch_size, mesh),
    "length buckets": lambda: finetune.predict_outputs(
      step, params, features, args.batch_size, mesh, data.kind
    ),
    "packed": lambda: finetune.predict_outputs(
      step, params, features, args.batch_size, mesh, data.kind, packed=True
    ),
  }
  first, outputs, seconds = {}, {}, {w: [] for w in WAYS}
  for way in WAYS:
    start = time.perf_counter()
    outputs[way] = ways[way]()
    first[way] = time.perf_counter() - start
  for r in range(args.rounds):
    for way in WAYS[r % 3 :] + WAYS[: r % 3]:  # rotate who goes first
      start = time.perf_counter()
      ways[way]()
      seconds[way].append(time.perf_counter() - start)
  mask = features["attention_mask"].astype(bool)
  if mask.ndim > 2:
    mask = mask.any(1)
  result = {
    "task": args.task,
    "kind": data.kind,
    "data": os.path.basename(args.data),
    "examples": n,
    "max_seq_length": width,
    "real_tokens": real,
    "padding_share_full_rows": round(1 - real / features["attention_mask"].size, 3),
    "batch_size": args.batch_size,
    "rounds": args.rounds,
    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    "jax": jax.__version__,
    "date": time.strftime("%Y-%m-%d"),
    "ways": {},
  }
  base = np.array(seconds["full rows"])
  for way in WAYS:
    s = np.array(seconds[way])
    metric = finetune.score(config, data, eval_set, outputs[way])
    diff = 0.0
    for key, value in outputs[way].items():
      ref = outputs["full rows"][key]
      if value.ndim == 1 or value.shape[1] != width:  # per example
        diff = max(diff, float(np.abs(value - ref).max()))
      else:
        diff = max(diff, float(np.abs(value[mask] - ref[mask]).max()))
    result["ways"][way] = {
      "real_tokens_per_s": round(real / float(np.median(s))),
      "speedup_vs_full_rows": round(float(np.median(base / s)), 2),
      "speedup_range": [round(float((base / s).min()), 2), round(float((base / s).max()), 2)],
      "first_pass_s": round(first[way], 2),
      "max_abs_diff_vs_full_rows": diff,
      "metric": {k: round(v, 4) for k, v in metric.items()},
    }
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  text = markdown(result)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(text)
  print(text)


def markdown(result) -> str:
  lines = [
    f"# Evaluation throughput: {result['task']} ({result['kind']}), {result['data']}",
    "",
    f"{result['examples']} examples at max_seq_length {result['max_seq_length']} "
    f"({result['padding_share_full_rows']:.0%} of full rows is padding), eval batch {result['batch_size']}, "
    f"{result['rounds']} rounds; {result['machine']}, jax {result['jax']}, {result['date']}.",
    "",
    "| way | real tokens/s | vs full rows (range) | first pass s | max abs diff vs full rows | metric |",
    "|---|---:|---:|---:|---:|---|",
  ]
  for way, r in result["ways"].items():
    lo, hi = r["speedup_range"]
    metric = ", ".join(f"{k} {v}" for k, v in r["metric"].items())
    lines.append(
      f"| {way} | {r['real_tokens_per_s']:,} | {r['speedup_vs_full_rows']:.2f}x ({lo:.2f}-{hi:.2f}) | "
      f"{r['first_pass_s']:.1f} | {r['max_abs_diff_vs_full_rows']:.1e} | {metric} |"
    )
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
