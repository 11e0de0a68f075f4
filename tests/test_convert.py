"""Checkpoint conversion: round trips through transformers, file formats, and clear errors."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import transformers

import bert_jax
from bert_jax import convert
from bert_jax.models import scan_params, unscan_params
from tests import helpers

TOL = 1e-5


def _tree_equal(a, b):
  fa, fb = convert.flatten(a), convert.flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def test_export_round_trip_minilm(minilm_dir, tmp_path):
  """bert_jax -> HF export -> transformers BertModel loads it with nothing missing -> same outputs."""
  bert = bert_jax.from_pretrained(minilm_dir)
  bert.save_pretrained(tmp_path)
  model, info = transformers.BertModel.from_pretrained(tmp_path, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
  texts = ["The universe is finished; the copestone is on.", "Call me Ishmael."]
  batch = dict(tokenizer(texts, padding=True, return_tensors="np"))
  with torch.no_grad():
    want = model.eval()(**helpers.torch_inputs(batch))
  ours = bert.encode(texts)
  assert (
    helpers.max_abs_diff_real(
      ours["last_hidden_state"], want.last_hidden_state.numpy(), batch["attention_mask"]
    )
    <= TOL
  )
  assert np.abs(ours["pooler_output"] - want.pooler_output.numpy()).max() <= TOL
  # The export is the same checkpoint: converting it back gives bit-identical params.
  _tree_equal(bert_jax.from_pretrained(tmp_path).params, bert.params)


def test_export_round_trip_pretraining_heads(tmp_path):
  helpers.tiny_hf_folder(str(tmp_path / "src"))
  bert = bert_jax.from_pretrained(tmp_path / "src")
  bert.save_pretrained(tmp_path / "out")
  model, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "out", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  batch = helpers.random_batch(bert.config.vocab_size, batch=2, length=20)
  with torch.no_grad():
    want = model.eval()(**helpers.torch_inputs(batch))
  out = bert.model().apply(
    bert.variables(), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  )
  assert (
    helpers.max_abs_diff_real(out["mlm_logits"], want.prediction_logits.numpy(), batch["attention_mask"])
    <= TOL
  )
  np.testing.assert_allclose(out["nsp_logits"], want.seq_relationship_logits.numpy(), atol=TOL, rtol=0)
  config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert config["architectures"] == ["BertForPreTraining"]


def test_bert_jax_export_keeps_everything(minilm_dir, tmp_path):
  bert = bert_jax.from_pretrained(minilm_dir, pooling="mean", scan_layers=True)
  bert.save(tmp_path)
  again = bert_jax.from_pretrained(tmp_path)
  assert again.config.pooling == "mean" and not again.config.scan_layers
  _tree_equal(again.params, unscan_params(bert.params, bert.config.num_layers))
  a, b = bert.encode(["Call me Ishmael."]), again.encode(["Call me Ishmael."])
  np.testing.assert_allclose(a["pooler_output"], b["pooler_output"], atol=1e-6)


def test_mean_pooling_matches_masked_mean(minilm_dir):
  bert = bert_jax.from_pretrained(minilm_dir, pooling="mean")
  assert "pooler" not in bert.params["bert"]
  out = bert.encode(["A short one.", "A somewhat longer sentence with more words in it."])
  mask = out["attention_mask"][..., None]
  want = (out["last_hidden_state"] * mask).sum(1) / mask.sum(1)
  np.testing.assert_allclose(out["pooler_output"], want, atol=1e-5)
  maxed = bert_jax.from_pretrained(minilm_dir, pooling="max").encode(["A short one.", "Another, longer one."])
  m = maxed["attention_mask"][..., None].astype(bool)
  np.testing.assert_allclose(
    maxed["pooler_output"], np.where(m, maxed["last_hidden_state"], -np.inf).max(1), atol=1e-6
  )


def test_scan_unscan_round_trip(minilm_dir):
  bert = bert_jax.from_pretrained(minilm_dir)
  scanned = scan_params(bert.params, 6)
  assert scanned["bert"]["encoder"]["layers"]["block"]["mlp"]["output"]["kernel"].shape == (6, 1536, 384)
  _tree_equal(unscan_params(scanned, 6), bert.params)
  with pytest.raises(ValueError, match=r"no layer\(s\) \[6\]"):
    scan_params(bert.params, 7)


def test_torch_bin_equals_safetensors_and_safetensors_preferred(tmp_path):
  helpers.tiny_hf_folder(str(tmp_path / "st"), seed=1)
  helpers.tiny_hf_folder(str(tmp_path / "bin"), seed=1, safe_serialization=False)
  assert os.path.exists(tmp_path / "bin" / "pytorch_model.bin")
  _tree_equal(
    bert_jax.from_pretrained(tmp_path / "bin").params, bert_jax.from_pretrained(tmp_path / "st").params
  )
  # Both files present: the safetensors file wins (a pickle is read only when nothing else exists).
  helpers.tiny_hf_folder(str(tmp_path / "other"), seed=2, safe_serialization=False)
  shutil.copy(tmp_path / "other" / "pytorch_model.bin", tmp_path / "st" / "pytorch_model.bin")
  state, source = convert.read_hf_weights(tmp_path / "st")
  assert source.endswith("model.safetensors")


def test_torch_bin_is_never_unpickled_unsafely(tmp_path):
  import pickle

  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

  helpers.tiny_hf_folder(str(tmp_path), safe_serialization=False)
  with open(tmp_path / "pytorch_model.bin", "wb") as f:
    pickle.dump({"x": Evil()}, f)
  with pytest.raises(convert.ConversionError, match="pytorch_model.bin: could not load as a weights-only"):
    bert_jax.from_pretrained(tmp_path)
  assert not (tmp_path / "pwned").exists()


# --- clear errors ----------------------------------------------------------------------------


@pytest.fixture
def tiny_folder(tmp_path):
  helpers.tiny_hf_folder(str(tmp_path), architecture="BertModel")
  return tmp_path


def test_error_missing_config(tiny_folder):
  os.remove(tiny_folder / "config.json")
  with pytest.raises(FileNotFoundError, match="not a BERT checkpoint folder"):
    bert_jax.from_pretrained(tiny_folder)


def test_error_malformed_config(tiny_folder):
  (tiny_folder / "config.json").write_text("{ not json")
  with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
    bert_jax.from_pretrained(tiny_folder)
  (tiny_folder / "config.json").write_text(json.dumps({"hidden_size": 32}))
  with pytest.raises(ValueError, match=r"config\.json: missing BERT config fields \['vocab_size'"):
    bert_jax.from_pretrained(tiny_folder)
  (tiny_folder / "config.json").write_text(
    json.dumps(
      dict(vocab_size=99, hidden_size=30, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
  )
  with pytest.raises(ValueError, match=r"config\.json: .*hidden_size=30 is not divisible by num_heads=4"):
    bert_jax.from_pretrained(tiny_folder)


def test_error_shapes_do_not_match_config(tiny_folder):
  config = json.loads((tiny_folder / "config.json").read_text())
  config["intermediate_size"] = 128
  (tiny_folder / "config.json").write_text(json.dumps(config))
  with pytest.raises(
    convert.ConversionError,
    match=r"model\.safetensors: shapes do not match the config: .*mlp/intermediate/kernel: "
    r"checkpoint \(32, 64\) vs config \(32, 128\)",
  ):
    bert_jax.from_pretrained(tiny_folder)


def test_error_unknown_key(tiny_folder):
  from safetensors.numpy import load_file, save_file

  path = tiny_folder / "model.safetensors"
  state = load_file(path)
  state["electra.discriminator.weight"] = np.zeros((3, 32), np.float32)
  save_file(state, path, metadata={"format": "pt"})
  with pytest.raises(
    convert.ConversionError,
    match=r"model\.safetensors: unknown weight name\(s\) \['electra.discriminator.weight'\]",
  ):
    bert_jax.from_pretrained(tiny_folder)
  assert "pooler" in bert_jax.from_pretrained(tiny_folder, strict=False).params["bert"]


def test_error_vocab_does_not_match(tiny_folder):
  helpers.write_vocab(str(tiny_folder), 90)
  with pytest.raises(
    convert.ConversionError, match="tokenizer has 90 tokens but the model's vocab_size is 99"
  ):
    bert_jax.from_pretrained(tiny_folder)


def test_error_not_a_safetensors_file(tiny_folder):
  (tiny_folder / "model.safetensors").write_bytes(b"definitely not safetensors")
  with pytest.raises(convert.ConversionError, match=r"model\.safetensors: not a readable safetensors file"):
    bert_jax.from_pretrained(tiny_folder)


# --- Google's original TF checkpoints --------------------------------------------------------

GOOGLE = os.path.join(os.path.dirname(__file__), "data", "google_bert_tiny")


def test_google_tf_checkpoint_matches_transformers():
  """A checkpoint written by TensorFlow with Google's names (and Adam slots) -> bert_jax, against
  transformers' BertForPreTraining holding the same weights (tests/data/google_bert_tiny/README.md)."""
  bert = bert_jax.from_pretrained(GOOGLE)
  assert bert.has_pretraining_heads and bert.tokenizer.lowercase  # no capitals in the vocab: uncased
  ref = transformers.BertForPreTraining.from_pretrained(os.path.join(GOOGLE, "hf")).eval()
  batch = helpers.random_batch(bert.config.vocab_size, batch=3, length=20)
  with torch.no_grad():
    want = ref(**helpers.torch_inputs(batch), output_hidden_states=True)
  out = bert.model().apply(
    bert.variables(), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  )
  assert (
    helpers.max_abs_diff_real(
      out["last_hidden_state"], want.hidden_states[-1].numpy(), batch["attention_mask"]
    )
    <= TOL
  )
  assert (
    helpers.max_abs_diff_real(out["mlm_logits"], want.prediction_logits.numpy(), batch["attention_mask"])
    <= TOL
  )
  np.testing.assert_allclose(out["nsp_logits"], want.seq_relationship_logits.numpy(), atol=TOL, rtol=0)


def test_google_checkpoint_errors(tmp_path):
  folder = tmp_path / "google"
  shutil.copytree(GOOGLE, folder, ignore=shutil.ignore_patterns("hf", "dtypes"))
  (folder / "bert_config.json").write_text("[]")
  with pytest.raises(ValueError, match=r"bert_config\.json: expected a JSON object"):
    bert_jax.from_pretrained(folder)
  shutil.copy(os.path.join(GOOGLE, "bert_config.json"), folder / "bert_config.json")
  os.remove(folder / "bert_model.ckpt.data-00000-of-00001")
  with pytest.raises(FileNotFoundError, match=r"bert_model\.ckpt\.data-00000-of-00001"):
    bert_jax.from_pretrained(folder)


def test_tf_names_unknown_variable_is_an_error():
  with pytest.raises(
    convert.ConversionError, match=r"unknown variable 'bert/encoder/layer_0/attention/self/rotary'"
  ):
    convert.tf_to_hf_state({"bert/encoder/layer_0/attention/self/rotary": np.zeros(3)}, source="x.ckpt")
