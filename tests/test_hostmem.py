"""bert_jax/hostmem.py: after `import bert_jax`, memory that is freed is reused without page faults (glibc);
BERT_JAX_MALLOC=system keeps glibc's defaults; a bad value is refused by name."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Frees and re-touches a 64 MiB block; prints the minor page faults of the second touch.
_REUSE = """
import ctypes, resource
import bert_jax
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
print(bert_jax.hostmem.keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
  return subprocess.run([sys.executable, "-c", code], env=dict(environ, **env), capture_output=True, text=True)


@pytest.mark.skipif(
  not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc's mallopt"
)
def test_freed_memory_is_reused_without_page_faults_and_system_opts_out():
  kept = _run(_REUSE)
  assert kept.returncode == 0, kept.stderr
  applied, faults = kept.stdout.split()
  pages = (64 << 20) // 4096
  assert applied == "True" and int(faults) < pages // 16, kept.stdout
  system = _run(_REUSE, BERT_JAX_MALLOC="system")
  applied, faults = system.stdout.split()
  assert applied == "False" and int(faults) > pages // 2, system.stdout  # glibc maps and unmaps 64 MiB


def test_a_bad_setting_is_refused_by_name():
  bad = _run("import bert_jax", BERT_JAX_MALLOC="fast")
  assert bad.returncode != 0 and "BERT_JAX_MALLOC='fast'" in bad.stderr and "'system'" in bad.stderr
