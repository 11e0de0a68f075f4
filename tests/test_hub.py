"""Hub names (hf://ORG/NAME[@REVISION]) wherever bert_jax takes a checkpoint folder.

No test reaches the network: a stand-in for huggingface_hub.snapshot_download copies the files its
allow_patterns select out of a local folder (the "repository") into a snapshot folder, as the real one
fetches them from the Hub into its cache; failures raise huggingface_hub's own error types.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import types

import numpy as np
import pytest
from huggingface_hub import errors

from bert_jax import files, finetune, hub
from bert_jax.pretrained import from_pretrained
from bert_jax.predict import Predictor
from bert_jax.tokenization import Tokenizer
from tests import helpers


class FakeHub:
  def __init__(self, root):
    self.root = root
    self.repos: dict[str, str] = {}  # repo id -> the folder standing for the repository
    self.calls: list[tuple[str, str | None, list[str]]] = []
    self.offline = False
    self.gated: set[str] = set()

  def snapshot_download(self, repo_id, *, revision=None, allow_patterns=None, **kwargs):
    self.calls.append((repo_id, revision, list(allow_patterns)))
    if repo_id.endswith("-"):  # as huggingface_hub's own name check does
      raise errors.HFValidationError(f"Repo id must not end with '-': {repo_id!r}")
    if self.offline:
      raise errors.LocalEntryNotFoundError("cannot reach the Hub and the file is not cached")
    response = types.SimpleNamespace(headers={}, request=None)
    if repo_id in self.gated:
      raise errors.GatedRepoError(f"403 for {repo_id}", response=response)
    if repo_id not in self.repos:
      raise errors.RepositoryNotFoundError(f"404 for {repo_id}", response=response)
    snapshot = os.path.join(self.root, repo_id.replace("/", "--"), revision or "main")
    os.makedirs(snapshot, exist_ok=True)
    for name in os.listdir(self.repos[repo_id]):
      source = os.path.join(self.repos[repo_id], name)
      if os.path.isfile(source) and any(fnmatch.fnmatch(name, p) for p in allow_patterns):
        shutil.copy(source, os.path.join(snapshot, name))
    return snapshot


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
  import huggingface_hub

  fake = FakeHub(str(tmp_path / "hub_cache"))
  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
  return fake


def test_encoder_from_the_hub_equals_the_local_folder_and_fetches_only_what_it_reads(fake_hub, minilm_dir):
  fake_hub.repos["sentence-transformers/all-MiniLM-L6-v2"] = minilm_dir
  remote = from_pretrained("hf://sentence-transformers/all-MiniLM-L6-v2@main", pooling="mean")
  local = from_pretrained(minilm_dir, pooling="mean")
  texts = ["A man is playing a guitar.", "Hub names resolve to folders."]
  np.testing.assert_array_equal(remote.encode(texts)["pooler_output"], local.encode(texts)["pooler_output"])
  assert [(repo, rev) for repo, rev, _ in fake_hub.calls] == [
    ("sentence-transformers/all-MiniLM-L6-v2", "main")
  ]
  fetched = set(os.listdir(remote.source))
  assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= fetched
  assert not fetched & {"README.md", ".gitattributes"}  # the sentence-transformers extras stay behind
  assert (
    Tokenizer.from_pretrained("hf://sentence-transformers/all-MiniLM-L6-v2").vocab == local.tokenizer.vocab
  )
  assert fake_hub.calls[-1][2] == ["*.json", "*.txt"]  # a tokenizer fetches no weights


def test_pretraining_vocabulary_from_a_hub_model(fake_hub, minilm_dir, tmp_path):
  from ml_collections import ConfigDict

  from bert_jax import train

  fake_hub.repos["sentence-transformers/all-MiniLM-L6-v2"] = minilm_dir
  config = ConfigDict({"data": {"vocab": "hf://sentence-transformers/all-MiniLM-L6-v2", "lowercase": True}})
  files.check_config_paths(config)
  tokenizer = train.load_or_train_tokenizer(config, str(tmp_path))
  assert tokenizer.vocab == Tokenizer.from_pretrained(minilm_dir).vocab
  assert fake_hub.calls[-1][2] == ["*.json", "*.txt"]


def test_a_repository_with_only_pytorch_model_bin_fetches_it_and_nothing_else(fake_hub, tmp_path):
  repo = tmp_path / "legacy"
  model = helpers.tiny_hf_folder(str(repo), "BertModel", safe_serialization=False)
  (repo / "tf_model.h5").write_bytes(b"not read by bert_jax")
  (repo / "flax_model.msgpack").write_bytes(b"not read by bert_jax")
  fake_hub.repos["legacy-bert"] = str(repo)  # an un-namespaced name, as bert-base-uncased was
  loaded = from_pretrained("hf://legacy-bert")
  assert len(fake_hub.calls) == 2 and "pytorch_model.bin" in fake_hub.calls[1][2]
  assert "pytorch_model.bin" not in fake_hub.calls[0][2]
  assert set(os.listdir(loaded.source)) == {"config.json", "pytorch_model.bin", "vocab.txt"}
  np.testing.assert_array_equal(
    loaded.params["bert"]["embeddings"]["word_embeddings"]["embedding"],
    model.embeddings.word_embeddings.weight.detach().numpy(),
  )


def test_fine_tuned_model_and_init_from_through_the_hub(fake_hub, tmp_path):
  repo = tmp_path / "classifier"
  helpers.tiny_hf_folder(
    str(repo), "BertForSequenceClassification", num_labels=2, id2label={0: "neg", 1: "pos"}
  )
  fake_hub.repos["someone/tiny-sentiment"] = str(repo)
  texts = ["good", "bad film", "fine"]
  remote = Predictor.from_pretrained("hf://someone/tiny-sentiment@v1.0")
  local = Predictor.from_pretrained(str(repo))
  assert remote.labels == ["neg", "pos"]
  assert remote.predict(texts) == local.predict(texts)
  folder = finetune.resolve_init_from("hf://someone/tiny-sentiment")
  assert os.path.isfile(os.path.join(folder, "config.json")) and fake_hub.calls[-1][:2] == (
    "someone/tiny-sentiment",
    None,
  )


def test_hub_errors_name_the_model_and_the_way_out(fake_hub, tmp_path):
  for bad in ("hf://", "hf://a/b/c", "hf://a b", "hf://org/name@"):
    with pytest.raises(hub.HubError, match="not a Hub model name"):
      from_pretrained(bad)
  assert not fake_hub.calls  # refused before asking the Hub
  assert hub.parse("hf://org/model@refs/pr/1") == ("org/model", "refs/pr/1")
  with pytest.raises(hub.HubError, match=r"hf://org/name-: not a valid Hub model name"):
    from_pretrained("hf://org/name-")
  fake_hub.gated.add("org/gated")
  with pytest.raises(hub.HubError, match="gated repository: accept its terms"):
    from_pretrained("hf://org/gated")
  sharded = tmp_path / "sharded"
  sharded.mkdir()
  for name in (
    "config.json",
    "vocab.txt",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
  ):
    (sharded / name).write_text("{}")
  fake_hub.repos["org/sharded"] = str(sharded)
  with pytest.raises(hub.HubError, match="sharded safetensors checkpoints are not supported"):
    from_pretrained("hf://org/sharded")
  snapshot = os.path.join(fake_hub.root, "org--sharded", "main")
  assert "model.safetensors.index.json" in os.listdir(snapshot)
  assert "model-00001-of-00002.safetensors" not in os.listdir(snapshot)  # no shard fetched
  with pytest.raises(hub.HubError, match=r"hf://nobody/nothing: no such repository"):
    from_pretrained("hf://nobody/nothing")
  fake_hub.offline = True
  with pytest.raises(hub.HubError, match=r"hf://org/model: not in the local Hub cache.*HF_HUB_OFFLINE"):
    Predictor.from_pretrained("hf://org/model")
  assert hub.local_folder("relative/path") == "relative/path"  # no prefix: a path, never a Hub name


def test_config_checkpoint_fields_take_hub_names_other_paths_do_not():
  from ml_collections import ConfigDict

  config = ConfigDict({"init_from": "hf://google-bert/bert-base-uncased", "data": {"train": "hf://x/y"}})
  with pytest.raises(
    ValueError, match=r"--config\.data\.train='hf://x/y': a HuggingFace Hub name is taken where"
  ):
    files.check_config_paths(config)
  config.data.train = "train.jsonl"
  files.check_config_paths(config)
