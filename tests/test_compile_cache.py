"""The runner's XLA compilation cache setting (bert_jax/compile_cache.py). That a run restarted on cached
executables computes exactly what an uninterrupted run does is tests/test_train.py's SIGKILL test, which
gives its runs a cache of their own."""

import os

import pytest

from bert_jax import compile_cache


def test_auto_uses_jax_own_variable_else_the_workdir(tmp_path):
  workdir = str(tmp_path / "run")
  shared = str(tmp_path / "shared")
  assert compile_cache.resolve("auto", workdir, env={compile_cache.ENV: shared}) == shared
  assert compile_cache.resolve("auto", workdir, env={}) == os.path.join(workdir, "xla_cache")
  assert compile_cache.resolve("off", workdir, env={compile_cache.ENV: shared}) is None
  assert compile_cache.resolve("elsewhere", workdir, env={}) == os.path.abspath("elsewhere")
  assert compile_cache.resolve("auto", "gs://bucket/run/", env={}) == "gs://bucket/run/xla_cache"
  with pytest.raises(ValueError, match="auto, off or a directory"):
    compile_cache.resolve("", workdir, env={})
