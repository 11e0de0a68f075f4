"""What the HuggingFace peers (peer_hf_flax.py, peer_torch.py) share: the transformers `BertConfig` of a
benchmark case. Imported in both peer environments (.venv-peers and the main .venv), each with its own
transformers."""

from __future__ import annotations

import transformers


def hf_config(case) -> transformers.BertConfig:
  s = case["sizes"]
  return transformers.BertConfig(
    vocab_size=case["vocab_size"],
    hidden_size=s["hidden_size"],
    num_hidden_layers=s["num_layers"],
    num_attention_heads=s["num_heads"],
    intermediate_size=s["mlp_dim"],
    max_position_embeddings=case["max_positions"],
    hidden_act="gelu",
  )
