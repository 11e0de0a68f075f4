"""bert_jax: BERT in JAX. One functional Flax (linen) BERT, exact against the reference, sharded with
jax.jit over a device mesh.

    import bert_jax
    bert = bert_jax.from_pretrained("path/to/hf_or_google_or_bert_jax_folder")
    out = bert.encode(["A sentence.", "Another one."])   # last_hidden_state, pooler_output, attention_mask

Attributes load lazily so that `python -m bert_jax.tokenize` does not pay for importing JAX.
"""

import importlib

from bert_jax import hostmem

__version__ = "0.1.0"

# BERT_JAX_MALLOC=keep: XLA's per-step temporaries reuse freed memory in any program (bert_jax/hostmem.py);
# the runner (bert_jax.main) does this unless BERT_JAX_MALLOC=system.
hostmem.keep_freed_memory(by_default=False)

_LAZY = {
  "from_pretrained": "bert_jax.pretrained",
  "PretrainedBert": "bert_jax.pretrained",
  "BertConfig": "bert_jax.models.config",
  "Tokenizer": "bert_jax.tokenization",
  "train_wordpiece": "bert_jax.tokenization",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'bert_jax' has no attribute {name!r}")
