"""bert_jax/hostmem.py: with the runner's settings, freed memory is reused without page faults (glibc);
`import bert_jax` alone applies them only with BERT_JAX_MALLOC=keep; BERT_JAX_MALLOC=system keeps glibc's
defaults; a bad value is refused by name."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Frees and re-touches a 64 MiB block; prints the minor page faults of the second touch.
_REUSE = """
import ctypes, resource, sys
import bert_jax
if sys.argv[1:] == ["apply"]:
  bert_jax.hostmem.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 64 << 20
def touch():
  p = libc.malloc(n)
  ctypes.memset(p, 1, n)
  libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(bert_jax.hostmem.in_effect(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(code: str, *args, **env) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "BERT_JAX_MALLOC"))}
  return subprocess.run(
    [sys.executable, "-c", code, *args], env=dict(environ, **env), capture_output=True, text=True
  )


@pytest.mark.skipif(
  not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
  reason="measures glibc's malloc through mallopt; on other C libraries keep_freed_memory() does nothing",
)
def test_freed_memory_is_reused_without_page_faults_and_system_opts_out():
  pages = (64 << 20) // 4096

  def faults(*args, **env):
    out = _run(_REUSE, *args, **env)
    assert out.returncode == 0, out.stderr
    applied, count = out.stdout.split()
    return applied == "True", int(count)

  for args, env in (((), {"BERT_JAX_MALLOC": "keep"}), (("apply",), {})):  # opted in; the runner's call
    applied, count = faults(*args, **env)
    assert applied and count < pages // 16, (args, env, count)
  for args, env in (((), {}), (("apply",), {"BERT_JAX_MALLOC": "system"})):  # a plain import; opted out
    applied, count = faults(*args, **env)
    assert not applied and count > pages // 2, (args, env, count)  # glibc maps and unmaps 64 MiB


def test_a_bad_setting_is_refused_by_name():
  bad = _run("import bert_jax", BERT_JAX_MALLOC="fast")
  assert bad.returncode != 0 and "BERT_JAX_MALLOC='fast'" in bad.stderr and "'system'" in bad.stderr
