"""The PyTorch peers (main .venv: torch CPU and transformers 5, the test requirements).

torch_eager:   transformers `BertModel` / `BertForMaskedLM` as they come (SDPA attention).
torch_compile: the same models through `torch.compile` (default mode, inductor); the first call compiles.
forward: eval mode under `torch.inference_mode()`. train: train mode (dropout on), the model's own MLM
loss from `labels` (vocabulary logits at every position), backward, `torch.optim.AdamW` with BERT's
settings (fused kernel, decay off biases and LayerNorm). float32 only: the driver skips other dtypes.

Run by bench.py: `python peer_torch.py torch_eager|torch_compile`; requests on stdin (see worker_io.py).
"""

from __future__ import annotations

import sys

import worker_io

CHANNEL = worker_io.protocol_channel()  # before any library can print to stdout

import torch  # noqa: E402
import transformers  # noqa: E402
from hf_common import hf_config  # noqa: E402

PEER = sys.argv[1] if len(sys.argv) > 1 else "torch_eager"
if PEER not in ("torch_eager", "torch_compile"):
  raise SystemExit(f"peer_torch.py: unknown peer {PEER!r}; expected torch_eager or torch_compile")
COMPILE = PEER == "torch_compile"
if COMPILE:
  # Every case compiles the same forward code object again (guarded on its own module); the default
  # limit of 8 recompilations would silently fall back to eager after a few cases.
  torch._dynamo.config.cache_size_limit = 256
  if hasattr(torch._dynamo.config, "recompile_limit"):
    torch._dynamo.config.recompile_limit = 256


def tensors(inputs, keys):
  return {k: torch.from_numpy(inputs[k]).long() for k in keys}


def setup_forward(case, inputs):
  model = transformers.BertModel(hf_config(case)).eval()
  runner = torch.compile(model) if COMPILE else model
  batch = tensors(inputs, ("input_ids", "attention_mask", "token_type_ids"))

  def step():
    with torch.inference_mode():
      runner(**batch)

  return step, {"attention": model.config._attn_implementation}, None


def setup_train(case, inputs):
  model = transformers.BertForMaskedLM(hf_config(case)).train()
  runner = torch.compile(model) if COMPILE else model
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
  optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
    lr=1e-4,
    betas=(0.9, 0.999),
    eps=1e-6,
    fused=True,
  )
  batch = tensors(inputs, ("input_ids", "attention_mask", "token_type_ids", "labels"))
  holder = {"loss": None}

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = runner(**batch).loss
    loss.backward()
    optimizer.step()
    holder["loss"] = loss.detach()

  return step, {"attention": model.config._attn_implementation, "optimizer": "AdamW(fused)"}, holder


def build(case, inputs):
  torch.manual_seed(case["seed"])
  return (setup_forward if case["mode"] == "forward" else setup_train)(case, inputs)


def release_compiled():
  if COMPILE:
    torch._dynamo.reset()


CASES = worker_io.Cases(build, release_compiled)


def setup(request):
  case = request["case"]
  if case["dtype"] != "float32":
    return {"skipped": f"{PEER} runs float32 only (asked {case['dtype']})"}
  return CASES.setup(request)


def versions():
  import numpy

  return {
    "versions": {
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "numpy": numpy.__version__,
    },
    "device": f"cpu, {torch.get_num_threads()} intra-op threads",
  }


if __name__ == "__main__":
  worker_io.serve(CHANNEL, PEER, {**CASES.handlers(), "setup": setup}, versions)
