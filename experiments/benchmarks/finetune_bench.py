"""Real-data fine-tuning throughput: bert_jax (padded and packed) against transformers + PyTorch eager
(padded to the recipe's length, and padded per batch to its longest sequence), in one process,
interleaved, on the same batches of the same real text.

Two jobs, both from the bundled all-MiniLM-L6-v2 with BERT's fine-tuning recipe (AdamW, warmup 10%, linear
decay, clipping at 1.0, dropout 0.1):
- `--task sentiment`: experiments/finetune_sentiment's classifier on Rotten Tomatoes sentences (batch 32,
  max_seq_length 64). PyTorch tokenizes with its own tokenizer; the lengths are checked to agree.
- `--task squad`: span QA on the SQuAD v1.1 JSON given (question + context windows of 384 tokens, stride 128,
  batch 32). PyTorch's `BertForQuestionAnswering` trains on bert_jax's featurised windows (the same tokens),
  with transformers' own loss (start and end cross-entropy over all positions).
Every peer trains on the same sequence of batches (one permutation of the training rows), so each round's
real (non-pad) tokens are the same for all; throughput = real tokens / seconds of the optimizer steps.
bert_jax's packed run compiles one step per row count it meets: all of them are compiled before timing
(their count and time are reported apart).

  .venv/bin/python experiments/finetune_sentiment/prepare.py \
      ../shared/data/classification/sentiment_movie_rt.jsonl SPLIT
  .venv/bin/python experiments/benchmarks/finetune_bench.py --data SPLIT --out OUT [--rounds 4 --steps 20]
  .venv/bin/python experiments/benchmarks/finetune_bench.py --task squad \
      --data ../shared/data/qa/squad_v1.1_dev.json --out OUT --rounds 4 --steps 8

Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "experiments", "finetune_sentiment"))

import bert_jax  # noqa: E402

bert_jax.hostmem.keep_freed_memory()  # as the runner does, before JAX starts its threads
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import torch_finetune  # noqa: E402
from bert_jax import finetune, objectives, optim, sharding, train_state  # noqa: E402
from bert_jax.data import finetune_data, packing  # noqa: E402
from bert_jax.models import task_model  # noqa: E402
from configs import common  # noqa: E402
from configs import finetune as finetune_configs  # noqa: E402

PEERS = ("bert_jax_packed", "bert_jax_padded", "torch_padded", "torch_longest")
TASKS = ("sentiment", "squad")
TITLES = {"sentiment": "sentences (sentiment)", "squad": "SQuAD questions and contexts (span QA)"}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", choices=TASKS, default="sentiment")
  p.add_argument(
    "--data", required=True, help="sentiment: prepare.py's output folder; squad: a SQuAD JSON file"
  )
  p.add_argument("--out", required=True)
  p.add_argument("--model", default="", help="checkpoint folder (default: the bundled all-MiniLM-L6-v2)")
  p.add_argument("--peers", default=",".join(PEERS))
  p.add_argument("--rounds", type=int, default=4)
  p.add_argument("--steps", type=int, default=20, help="optimizer steps per peer and round")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--max-seq-length", type=int, default=0, help="default: 64 (sentiment), 384 (squad)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  args.max_seq_length = args.max_seq_length or {"sentiment": 64, "squad": 384}[args.task]
  unknown = sorted(set(args.peers.split(",")) - set(PEERS))
  if unknown:
    p.error(f"--peers: unknown {unknown}; known: {list(PEERS)}")
  return args


def finetune_config(args, model_dir):
  config = finetune_configs.get_config("task=" + ("classification" if args.task == "sentiment" else "span"))
  config.unlock()
  config.init_from = model_dir
  if args.task == "sentiment":
    config.data.train = os.path.join(args.data, "train.jsonl")
    config.data.validation = os.path.join(args.data, "validation.jsonl")
  else:  # throughput only: the evaluation set is not used
    config.data.train = config.data.validation = args.data
    config.data.max_eval_examples = 1
  config.data.max_seq_length = args.max_seq_length
  config.optimizer.learning_rate = 5e-5
  config.batch_size = args.batch_size
  config.lock()
  return config


class BertJaxPeer:
  """The fine-tuning runner's own pieces: task model, AdamW (clip 1.0), train step, packing."""

  def __init__(self, config, loaded, data, packed: bool, total_steps: int):
    self.packed, self.kind = packed, data.kind
    self.mesh, rules = sharding.from_config(common.mesh_config("dp"))
    opt = config.optimizer.copy_and_resolve_references()
    opt.unlock()
    opt.warmup_steps = int(config.warmup_fraction * total_steps)
    tx = optim.make_optimizer(opt, total_steps=total_steps, num_layers=loaded.config.num_layers)
    model = task_model(loaded.config, data.kind, len(data.labels))
    state, shardings = train_state.create_train_state(model, tx, self.mesh, rules, seed=config.seed)
    shared = finetune.Shared(
      config.init_from, loaded.config, jax.device_get(loaded.params["bert"]), None, data
    )
    self.state = finetune._init_params(state, shared)  # the runner's: the encoder weights the head model has
    self.step_fn = train_state.make_train_step(
      model, tx, objectives.get(data.kind), self.mesh, rules, shardings
    )
    self.train = data.train
    length = data.train["input_ids"].shape[1]
    self.per_row = min(config.batch_size, packing.per_row_limit(data.train["attention_mask"].sum(1), length))
    self.rows_seen: list[int] = []

  def batch(self, rows):
    batch = {k: v[rows] for k, v in self.train.items()}
    if self.packed:
      batch = finetune.pack_rows(batch, self.kind, self.per_row, sharding.data_parallel_size(self.mesh)).batch
      self.rows_seen.append(len(batch["input_ids"]))
    return sharding.global_batch(batch, self.mesh)

  def prepare(self, batches):
    """Compiles every shape the timed steps will use (one per packed row count); returns (count, seconds)."""
    shapes, start = {}, time.perf_counter()
    for rows in batches:
      b = self.batch(rows)
      shapes.setdefault(b["input_ids"].shape, b)
    for b in shapes.values():
      self.state, metrics = self.step_fn(self.state, b)
      jax.block_until_ready(metrics)
    return len(shapes), time.perf_counter() - start

  def run(self, batches):
    inputs = [self.batch(rows) for rows in batches]  # host-side packing is not timed (a loader does it)
    start = time.perf_counter()
    for b in inputs:
      self.state, metrics = self.step_fn(self.state, b)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start


def torch_training_data(args, config, model_dir, data) -> dict[str, torch.Tensor]:
  """The PyTorch peers' training tensors (inputs and labels), row for row those of bert_jax."""
  if args.task == "squad":
    return {k: torch.as_tensor(v.astype(np.int64)) for k, v in data.train.items()}
  import transformers

  texts, labels = torch_finetune.read_split(config.data.train)
  tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
  inputs, _ = torch_finetune.encode(tokenizer, texts, config.data.max_seq_length)
  # The jax tokenizer and the HuggingFace one must see the same tokens, or the peers do different work.
  mismatch = int((inputs["attention_mask"].sum(1).numpy() != data.train["attention_mask"].sum(1)).sum())
  if mismatch:
    raise SystemExit(f"{mismatch} train rows tokenize to different lengths in bert_jax and transformers")
  inputs["labels"] = torch_finetune.label_ids(
    labels, {n: i for i, n in enumerate(data.labels)}, "train.jsonl"
  )
  return inputs


def torch_model(task: str, model_dir: str, num_labels: int):
  if task == "sentiment":
    return torch_finetune.load_model(model_dir, num_labels)[0]
  from transformers import BertForQuestionAnswering

  model, info = BertForQuestionAnswering.from_pretrained(model_dir, output_loading_info=True)
  missing = [k for k in info["missing_keys"] if not k.startswith("qa_outputs.")]
  if missing or info["mismatched_keys"]:
    raise SystemExit(
      f"{model_dir}: BertForQuestionAnswering could not load {missing or info['mismatched_keys']}"
    )
  return model


class TorchPeer:
  """experiments/finetune_sentiment/torch_finetune.py's optimizer (BERT's AdamW groups) on the task's
  transformers model; padding to the recipe's length or, per batch, to its longest sequence (what
  DataCollatorWithPadding does)."""

  def __init__(self, config, model, inputs, longest: bool, total_steps: int):
    import transformers

    self.longest, self.inputs, self.model = longest, inputs, model
    self.optimizer = torch_finetune.make_optimizer(self.model, config.optimizer.learning_rate, 0.01)
    self.scheduler = transformers.get_linear_schedule_with_warmup(
      self.optimizer, int(config.warmup_fraction * total_steps), total_steps
    )
    self.model.train()

  def batch(self, rows):
    batch = {k: v[torch.as_tensor(rows)] for k, v in self.inputs.items()}
    if self.longest:
      width = int(batch["attention_mask"].sum(1).max())
      batch = {k: (v[:, :width] if v.ndim == 2 else v) for k, v in batch.items()}
    return batch

  def prepare(self, batches):
    start = time.perf_counter()
    self.run(batches[:1])
    return 0, time.perf_counter() - start

  def run(self, batches):
    inputs = [self.batch(rows) for rows in batches]
    start = time.perf_counter()
    for batch in inputs:
      loss = self.model(**batch).loss
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1.0)
      self.optimizer.step()
      self.scheduler.step()
    return time.perf_counter() - start


def main(argv=None):
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  from bert_jax.embed import bundled_minilm_path

  model_dir = args.model or bundled_minilm_path()
  config = finetune_config(args, model_dir)
  _, loaded = finetune.load_encoder(config)
  data = finetune_data.load_task_data(config, loaded.tokenizer)
  n = data.num_train
  timed = args.rounds * args.steps
  total_steps = n // args.batch_size
  if timed + 1 > total_steps:
    raise SystemExit(f"--rounds x --steps = {timed} (+1 warm-up) exceeds one epoch of {total_steps} steps")
  order = np.random.default_rng(args.seed).permutation(n)
  batches = [order[i * args.batch_size : (i + 1) * args.batch_size] for i in range(timed + 1)]
  real = [int(data.train["attention_mask"][b].sum()) for b in batches]
  torch_data = None

  peers, setup = {}, {}
  for name in args.peers.split(","):
    start = time.perf_counter()
    if name.startswith("bert_jax"):
      peers[name] = BertJaxPeer(config, loaded, data, name.endswith("packed"), total_steps)
    else:
      if torch_data is None:
        torch_data = torch_training_data(args, config, model_dir, data)
      torch.manual_seed(config.seed)
      model = torch_model(args.task, model_dir, len(data.labels))
      peers[name] = TorchPeer(config, model, torch_data, name.endswith("longest"), total_steps)
    compiled, seconds = peers[name].prepare([batches[0]] + batches[1:])
    setup[name] = {
      "build_s": time.perf_counter() - start - seconds,
      "compiled_shapes": compiled,
      "compile_s": seconds,
    }
    print(f"{name}: ready ({setup[name]})", flush=True)

  times = {name: [] for name in peers}
  for r in range(args.rounds):
    steps = batches[1 + r * args.steps : 1 + (r + 1) * args.steps]
    names = list(peers)
    names = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
    for name in names:
      time.sleep(0.5)  # let the other framework's worker threads go idle
      times[name].append(peers[name].run(steps))
    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)

  round_tokens = [sum(real[1 + r * args.steps : 1 + (r + 1) * args.steps]) for r in range(args.rounds)]
  result = {
    "date": time.strftime("%Y-%m-%d"),
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "versions": {"jax": jax.__version__, "torch": torch.__version__},
    "command": "python experiments/benchmarks/finetune_bench.py " + " ".join(argv or sys.argv[1:]),
    "args": vars(args),
    "round_real_tokens": round_tokens,
    "setup": setup,
    "peers": {},
  }
  for name, secs in times.items():
    rates = [t / s for t, s in zip(round_tokens, secs)]
    result["peers"][name] = {
      "seconds": secs,
      "real_tokens_per_second": rates,
      "median": float(np.median(rates)),
      "min": float(np.min(rates)),
      "max": float(np.max(rates)),
    }
  if "bert_jax_packed" in peers:
    rows = peers["bert_jax_packed"].rows_seen
    tokens = args.max_seq_length * np.array(rows[-timed:])
    result["packed_fill"] = float(np.sum(real[1:]) / tokens.sum())
    result["packed_rows"] = sorted(set(rows))
  result["padded_fill"] = float(np.sum(real[1:]) / (timed * args.batch_size * args.max_seq_length))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(markdown(result))
  print(markdown(result))


def markdown(result) -> str:
  peers = result["peers"]
  best_torch = max((v["median"] for k, v in peers.items() if k.startswith("torch")), default=None)
  lines = [
    f"# Fine-tuning throughput on real {TITLES[result['args']['task']]} "
    f"({result['date']}, {result['machine']})",
    "",
    f"`{result['command']}`",
    "",
    "| peer | real tokens/s (median of rounds) | spread | vs best PyTorch | compiled shapes | compile s |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for name, v in peers.items():
    ratio = f"{v['median'] / best_torch:.2f}x" if best_torch else ""
    s = result["setup"][name]
    lines.append(
      f"| {name} | {v['median']:,.0f} | {v['min']:,.0f}-{v['max']:,.0f} | {ratio} | {s['compiled_shapes']} | "
      f"{s['compile_s']:.1f} |"
    )
  lines.append("")
  lines.append(f"Real tokens per padded token: padded to the recipe's length {result['padded_fill']:.1%}")
  if "packed_fill" in result:
    lines[-1] += f"; packed {result['packed_fill']:.1%} (rows per batch: {result['packed_rows']})"
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
