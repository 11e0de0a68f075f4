"""Reference models built with transformers (the reference implementation) for parity tests."""

from __future__ import annotations

import os

import numpy as np

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
  "the a of and to in is it that was he for on are with as his they be at one have this from "
  "or had by word but what some we can out other were all there when up use your how said an "
  "each she which do their time if will way about many then them write would like so these her "
  "long make thing see him two has look more day could go come did number sound no most people "
  "my over know water than call first who may down side been now find"
).split()


def write_vocab(directory: str, size: int) -> list[str]:
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
  tokens = list(dict.fromkeys(SPECIALS + list(".,!?'") + letters + ["##" + c for c in letters] + WORDS))
  if len(tokens) < size:
    raise ValueError(f"test vocab has only {len(tokens)} tokens")
  tokens = tokens[:size]
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")
  return tokens


def sample_documents(tok, drop_ids, lines_per_doc: int = 5) -> list[list[list[int]]]:
  """The lines of tests/data's sample texts as sentences of token ids (the ids in `drop_ids` left out); a blank
  line or every `lines_per_doc` lines ends a document."""
  docs, doc = [], []
  for name in ("sample_text.txt", "parity_sentences.txt"):
    with open(os.path.join(os.path.dirname(__file__), "data", name), encoding="utf-8") as f:
      for line in f.read().split("\n") + [""]:
        # The text spells "[MASK]" and "[CLS]" once; as text they are not ours to keep.
        ids = [i for i in tok.convert_tokens_to_ids(tok.tokenize(line)) if i not in drop_ids]
        if ids:
          doc.append(ids)
        if doc and (not ids or len(doc) == lines_per_doc):
          docs.append(doc)
          doc = []
  return docs


def tiny_hf_config(**overrides):
  import transformers

  values = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_act="gelu",
  )
  values.update(overrides)
  return transformers.BertConfig(**values)


def randomize_(model, seed: int = 0, std: float = 0.2) -> None:
  """Every weight random, LayerNorm and biases included, so a swapped or untransposed weight shows."""
  import torch

  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * std
      p.copy_(1.0 + noise if name.endswith("LayerNorm.weight") else noise)


def tiny_hf_folder(
  directory: str,
  architecture: str = "BertForPreTraining",
  seed: int = 0,
  safe_serialization: bool = True,
  **config_overrides,
):
  """Saves a randomly initialised transformers BERT with a matching vocab.txt; returns the model."""
  import torch
  import transformers

  torch.manual_seed(seed)
  config = tiny_hf_config(**config_overrides)
  model = getattr(transformers, architecture)(config).eval()
  randomize_(model, seed)
  model.save_pretrained(directory)
  if not safe_serialization:
    # transformers 5 writes only safetensors; a legacy pytorch_model.bin is torch.save of the state dict.
    torch.save(model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
    os.remove(os.path.join(directory, "model.safetensors"))
  write_vocab(directory, config.vocab_size)
  return model


def random_batch(vocab_size: int, batch: int, length: int, seed: int = 0, pairs: bool = True):
  """Token ids with [CLS]/[SEP], segment ids and right padding of varied lengths."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab_size, (batch, length))
  mask = np.zeros((batch, length), np.int64)
  types = np.zeros((batch, length), np.int64)
  for b in range(batch):
    n = int(rng.integers(length // 2, length + 1)) if b else length
    mask[b, :n] = 1
    ids[b, 0] = 2
    ids[b, n - 1] = 3
    ids[b, n:] = 0
    if pairs and n > 4:
      cut = n // 2
      ids[b, cut - 1] = 3
      types[b, cut:n] = 1
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def torch_inputs(batch):
  import torch

  return {k: torch.tensor(v) for k, v in batch.items()}


def max_abs_diff_real(ours, ref, attention_mask) -> float:
  """max |Δ| over real (non-padding) positions of (B, L, ...) arrays."""
  keep = np.asarray(attention_mask).astype(bool)
  return float(np.abs(np.asarray(ours, np.float32) - np.asarray(ref, np.float32))[keep].max())


# --- small training setups (sharding and multi-process tests) --------------------------------


def tiny_training(objective: str = "mlm_nsp"):
  """(model, optimizer, objective) for a small BERT whose dimensions divide 8 devices every way."""
  from bert_jax import objectives, optim
  from bert_jax.models import BertConfig, BertForPreTraining
  from configs import common

  config = BertConfig(
    vocab_size=128, hidden_size=64, num_layers=2, num_heads=8, mlp_dim=128, max_position_embeddings=32
  )
  opt = common.optimizer_config("adamw", learning_rate=1e-3, warmup_steps=2, total_steps=10)
  return BertForPreTraining(config), optim.make_optimizer(opt), objectives.get(objective)


def pretraining_batches(
  steps: int, batch: int = 8, length: int = 16, predictions: int = 4, vocab: int = 128, seed: int = 0
):
  """Synthetic pretraining batches with padding and unused prediction slots (weight 0)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(steps):
    b = random_batch(vocab, batch, length, seed=int(rng.integers(1 << 30)))
    lengths = b["attention_mask"].sum(1)
    positions = np.stack([rng.integers(1, max(n - 1, 2), predictions) for n in lengths])
    weights = np.ones((batch, predictions), np.float32)
    weights[::3, -1] = 0.0
    out.append(
      {k: v.astype(np.int32) for k, v in b.items()}
      | {
        "masked_positions": positions.astype(np.int32),
        "masked_ids": rng.integers(5, vocab, (batch, predictions)).astype(np.int32),
        "masked_weights": weights,
        "nsp_labels": rng.integers(0, 2, batch).astype(np.int32),
      }
    )
  return out


def train_steps(mesh, strategy: str, batches):
  """Trains the tiny model on `batches` (global batches; each process feeds its own rows)."""

  from bert_jax import sharding, train_state

  model, tx, objective = tiny_training()
  rules = sharding.rules_for(strategy)
  state, shardings = train_state.create_train_state(model, tx, mesh, rules, seed=0)
  step = train_state.make_train_step(model, tx, objective, mesh, rules, shardings)
  rows = sharding.process_rows(mesh, len(batches[0]["input_ids"]))
  losses = []
  for batch in batches:
    state, metrics = step(state, sharding.global_batch({k: v[rows] for k, v in batch.items()}, mesh))
    losses.append(float(metrics["loss"]))
  return state, losses, step


def flat_params(tree) -> dict:
  import flax

  return {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree).items()}


def assert_params_close(got, want, rtol=1e-5):
  """Per parameter, relative error ||got - want|| / ||want|| <= rtol. The attention key bias is the
  exception: its gradient is identically zero (softmax is unchanged when every key score of a query
  moves by q·b), so it holds only rounding noise near 1e-10 and is compared absolutely."""
  got, want = flat_params(got), flat_params(want)
  assert sorted(got) == sorted(want)
  for name in want:
    if name.endswith("attention/key/bias"):
      assert np.abs(got[name] - want[name]).max() <= 1e-8, name
    elif not np.any(want[name]):
      assert np.abs(got[name]).max() <= 1e-8, name  # e.g. a zero-initialised bias before any update
    else:
      error = np.linalg.norm(got[name] - want[name]) / np.linalg.norm(want[name])
      assert error <= rtol, (name, error)


# --- two jax.distributed processes on this machine -------------------------------------------------------------


def two_jax_processes(argv: list[str], devices_each: int, timeout: float) -> list[tuple[int, str]]:
  """Runs `python ARGV` as processes 0 and 1 of one jax.distributed job over gloo on 127.0.0.1, each with
  `devices_each` CPU devices; returns each process's (exit status, output)."""
  import socket
  import subprocess
  import sys

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}",
    JAX_PLATFORMS="cpu",
    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
    JAX_NUM_PROCESSES="2",
  )
  procs = [
    subprocess.Popen(
      [sys.executable, *argv],
      env=dict(env, JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [(p.returncode, out) for p, out in zip(procs, outputs)]
