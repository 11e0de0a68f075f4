"""The transformers + PyTorch side of the sentiment fine-tuning comparison: fine-tunes a HuggingFace BERT folder
as a sequence classifier on the split that prepare.py writes, with the recipe bert_jax uses, and records accuracy
and speed in a JSON file.

    python experiments/finetune_sentiment/torch_finetune.py --model DIR --data SPLIT_DIR --output RESULT.json

The recipe is the BERT paper's fine-tuning one: AdamW (betas 0.9/0.999, eps 1e-6, weight decay 0.01 except on
biases and LayerNorm weights), linear warmup over the first 10% of steps then linear decay to 0, gradient clipping
at global norm 1.0, the config's dropout, batches shuffled each epoch. Sequences are padded to --max-seq-length and
the last partial training batch is dropped, because bert_jax trains with fixed shapes (one compiled step); doing the
same here keeps the comparison about the framework, not about the amount of padding or the number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, BertForSequenceClassification
from transformers.optimization import get_linear_schedule_with_warmup

from bert_jax import files

PROGRESS_EVERY = 50
# Parameters named like this are not weight-decayed (BERT's optimization.py excludes "LayerNorm" and "bias").
NO_DECAY = ("bias", "LayerNorm.weight")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
    "--model", required=True, help="HuggingFace BERT folder (config.json + weights + vocab)"
  )
  parser.add_argument(
    "--data", required=True, help="folder with train.jsonl and validation.jsonl (prepare.py)"
  )
  parser.add_argument("--output", required=True, help="result JSON, rewritten after every epoch")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--learning-rate", type=float, default=5e-5)
  parser.add_argument("--warmup-fraction", type=float, default=0.1)
  parser.add_argument("--weight-decay", type=float, default=0.01)
  parser.add_argument("--max-seq-length", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
  parser.add_argument("--max-train-examples", type=int, default=0, help="use the first N train rows; 0: all")
  args = parser.parse_args(argv)
  for name in ("epochs", "batch_size", "max_seq_length", "threads"):
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}; expected at least 1")
  if not 0.0 <= args.warmup_fraction <= 1.0:
    parser.error(f"--warmup-fraction is {args.warmup_fraction}; expected a value in [0, 1]")
  if args.max_train_examples < 0:
    parser.error(f"--max-train-examples is {args.max_train_examples}; expected 0 (all) or a positive count")
  return args


def read_split(path: str) -> tuple[list[str], list[str]]:
  """Texts and label names of one prepare.py output file."""
  texts, labels = [], []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(
          f"{path}:{number}: not valid JSON ({e.msg}); expected the output of prepare.py"
        ) from None
      if not isinstance(row, dict):
        raise TypeError(f"{path}:{number}: got {type(row).__name__}; expected a JSON object")
      for field in ("text", "label"):
        if not isinstance(row.get(field), str):
          raise TypeError(f"{path}:{number}: field {field!r} is {row.get(field)!r}; expected a string")
      texts.append(row["text"])
      labels.append(row["label"])
  if not texts:
    raise ValueError(f"{path}: no rows; expected the output of prepare.py")
  return texts, labels


def label_ids(names: list[str], label_map: dict[str, int], path: str) -> torch.Tensor:
  unknown = sorted(set(names) - set(label_map))
  if unknown:
    raise ValueError(
      f"{path}: labels {unknown} do not occur in train.jsonl; known labels: {sorted(label_map)}"
    )
  return torch.tensor([label_map[n] for n in names], dtype=torch.long)


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[dict[str, torch.Tensor], dict]:
  """Fixed-shape [n, max_length] inputs, plus the untruncated token-length statistics (to see what a
  max_length cuts off)."""
  lengths = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])
  inputs = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
  stats = {
    "max": int(lengths.max()),
    "p99": float(np.percentile(lengths, 99)),
    "mean": float(lengths.mean()),
    "truncated": int((lengths > max_length).sum()),
  }
  return dict(inputs), stats


def load_model(model_dir: str, num_labels: int) -> tuple[BertForSequenceClassification, dict]:
  """The pretrained encoder and pooler with a fresh classifier; any other weight missing is an error, because
  then the comparison would be fine-tuning a partly random model."""
  model, info = BertForSequenceClassification.from_pretrained(
    model_dir, num_labels=num_labels, output_loading_info=True
  )
  missing = sorted(info["missing_keys"])
  unexpected = sorted(k for k in info["unexpected_keys"] if not k.endswith("position_ids"))
  if [k for k in missing if not k.startswith("classifier.")] or unexpected or info["mismatched_keys"]:
    raise ValueError(
      f"{model_dir}: checkpoint does not match BertForSequenceClassification: missing {missing}, unexpected "
      f"{unexpected}, mismatched {sorted(info['mismatched_keys'])}; expected only classifier.* to be missing"
    )
  loading = {
    "newly_initialized": missing,
    "pooler_in_checkpoint": not any(k.startswith("bert.pooler.") for k in missing),
  }
  return model, loading


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
  decay, no_decay = [], []
  for name, param in model.named_parameters():
    (no_decay if name.endswith(NO_DECAY) else decay).append(param)
  groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
  return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-6)


def batch_at(inputs: dict[str, torch.Tensor], labels: torch.Tensor, index: torch.Tensor) -> dict:
  batch = {name: value[index] for name, value in inputs.items()}
  batch["labels"] = labels[index]
  return batch


def evaluate(model, inputs: dict[str, torch.Tensor], labels: torch.Tensor, batch_size: int) -> float:
  model.eval()
  correct = 0
  with torch.inference_mode():
    for start in range(0, len(labels), batch_size):
      index = torch.arange(start, min(start + batch_size, len(labels)))
      batch = {name: value[index] for name, value in inputs.items()}
      logits = model(**batch).logits
      correct += int((logits.argmax(-1) == labels[index]).sum())
  return correct / len(labels)


class Trainer:
  """One optimizer step per full batch; counts the real and padded tokens it trains on and the time it takes."""

  def __init__(self, model, optimizer, scheduler, inputs, labels, batch_size: int, seed: int):
    self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
    self.inputs, self.labels, self.batch_size = inputs, labels, batch_size
    self.generator = torch.Generator().manual_seed(seed)
    self.step = 0
    self.seconds = 0.0
    self.real_tokens = 0
    self.padded_tokens = 0

  def train_epoch(self, epoch: int, total_steps: int) -> float:
    """Mean training loss of the epoch."""
    self.model.train()
    order = torch.randperm(len(self.labels), generator=self.generator)
    steps = len(self.labels) // self.batch_size
    losses, window_loss, window_start = [], [], time.perf_counter()
    epoch_start = window_start
    for i in range(steps):
      batch = batch_at(self.inputs, self.labels, order[i * self.batch_size : (i + 1) * self.batch_size])
      loss = self.model(**batch).loss
      if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss.item()} at step {self.step + 1} (epoch {epoch})")
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1.0)
      self.optimizer.step()
      self.scheduler.step()
      self.step += 1
      self.real_tokens += int(batch["attention_mask"].sum())
      self.padded_tokens += batch["attention_mask"].numel()
      losses.append(loss.item())
      window_loss.append(losses[-1])
      if self.step % PROGRESS_EVERY == 0 or self.step == total_steps:
        now = time.perf_counter()
        print(
          f"step {self.step}/{total_steps} epoch {epoch} loss {np.mean(window_loss):.4f} "
          f"lr {self.scheduler.get_last_lr()[0]:.3e} {len(window_loss) / (now - window_start):.3f} steps/s "
          f"train time {self.seconds + now - epoch_start:.0f}s",
          flush=True,
        )
        window_loss, window_start = [], now
    self.seconds += time.perf_counter() - epoch_start
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  command = shlex.join([sys.executable] + (sys.argv if argv is None else [sys.argv[0]] + list(argv)))
  torch.manual_seed(args.seed)
  torch.set_num_threads(args.threads)

  train_path = os.path.join(args.data, "train.jsonl")
  validation_path = os.path.join(args.data, "validation.jsonl")
  train_texts, train_names = read_split(train_path)
  if args.max_train_examples:
    train_texts, train_names = train_texts[: args.max_train_examples], train_names[: args.max_train_examples]
  validation_texts, validation_names = read_split(validation_path)
  label_map = {name: i for i, name in enumerate(sorted(set(train_names)))}
  train_labels = label_ids(train_names, label_map, train_path)
  validation_labels = label_ids(validation_names, label_map, validation_path)
  steps_per_epoch = len(train_labels) // args.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{train_path}: {len(train_labels)} train rows make no full batch of {args.batch_size}")
  total_steps = steps_per_epoch * args.epochs
  warmup_steps = int(args.warmup_fraction * total_steps)  # BERT's run_classifier.py truncates the same way

  load_start = time.perf_counter()
  tokenizer = AutoTokenizer.from_pretrained(args.model)
  train_inputs, train_tokens = encode(tokenizer, train_texts, args.max_seq_length)
  validation_inputs, validation_tokens = encode(tokenizer, validation_texts, args.max_seq_length)
  model, loading = load_model(args.model, len(label_map))
  load_seconds = time.perf_counter() - load_start
  print(
    f"{len(train_labels)} train / {len(validation_labels)} validation rows, labels {label_map}, "
    f"{steps_per_epoch} steps per epoch, {total_steps} steps, {warmup_steps} warmup; "
    f"pooler in checkpoint: {loading['pooler_in_checkpoint']}; newly initialized: {loading['newly_initialized']}; "
    f"{torch.get_num_threads()} threads; loaded in {load_seconds:.1f}s",
    flush=True,
  )

  optimizer = make_optimizer(model, args.learning_rate, args.weight_decay)
  scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
  trainer = Trainer(model, optimizer, scheduler, train_inputs, train_labels, args.batch_size, args.seed)
  result = {
    "framework": "transformers+pytorch",
    "complete": False,
    "command": command,
    "args": vars(args),
    "torch_version": torch.__version__,
    "transformers_version": transformers.__version__,
    "python_version": platform.python_version(),
    "threads": torch.get_num_threads(),
    "attention_implementation": model.config._attn_implementation,
    "hidden_dropout_prob": model.config.hidden_dropout_prob,
    "attention_probs_dropout_prob": model.config.attention_probs_dropout_prob,
    "parameters": sum(p.numel() for p in model.parameters()),
    "loading": loading,
    "label_map": label_map,
    "train_examples": len(train_labels),
    "validation_examples": len(validation_labels),
    "train_token_lengths": train_tokens,
    "validation_token_lengths": validation_tokens,
    "steps_per_epoch": steps_per_epoch,
    "total_steps": total_steps,
    "warmup_steps": warmup_steps,
    "load_seconds": load_seconds,
    "epochs": [],
  }
  eval_seconds = 0.0
  for epoch in range(1, args.epochs + 1):
    train_loss = trainer.train_epoch(epoch, total_steps)
    eval_start = time.perf_counter()
    accuracy = evaluate(model, validation_inputs, validation_labels, args.batch_size)
    eval_seconds += time.perf_counter() - eval_start
    print(f"epoch {epoch}: train loss {train_loss:.4f} validation accuracy {accuracy:.4f}", flush=True)
    result["epochs"].append(
      {"epoch": epoch, "step": trainer.step, "train_loss": train_loss, "validation_accuracy": accuracy}
    )
    accuracies = [e["validation_accuracy"] for e in result["epochs"]]
    result.update(
      complete=epoch == args.epochs,
      steps=trainer.step,
      final_accuracy=accuracies[-1],
      best_accuracy=max(accuracies),
      train_seconds=trainer.seconds,
      eval_seconds=eval_seconds,
      steps_per_second=trainer.step / trainer.seconds,
      real_tokens_per_second=trainer.real_tokens / trainer.seconds,
      padded_tokens_per_second=trainer.padded_tokens / trainer.seconds,
      real_tokens=trainer.real_tokens,
      padded_tokens=trainer.padded_tokens,
    )
    # Rewritten every epoch so that a long run that dies still leaves its finished epochs behind.
    files.write_json(args.output, result)
  print(
    f"final accuracy {result['final_accuracy']:.4f}, best {result['best_accuracy']:.4f}; "
    f"train {result['train_seconds']:.0f}s ({result['steps_per_second']:.3f} steps/s, "
    f"{result['real_tokens_per_second']:.0f} real / {result['padded_tokens_per_second']:.0f} padded tokens/s), "
    f"eval {eval_seconds:.1f}s; wrote {args.output}",
    flush=True,
  )


if __name__ == "__main__":
  sys.exit(main())
