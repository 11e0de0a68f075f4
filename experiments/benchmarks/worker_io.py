"""What every benchmark worker shares: the request loop over stdin/stdout, and the inputs.

A worker is a long-lived process in its own virtual environment. It reads one JSON request per line on
stdin and answers one JSON line on its protocol channel. Libraries print to stdout (XLA, inductor,
transformers' warnings), so the protocol channel is a private duplicate of the original stdout and fd 1
is pointed at stderr before any library is imported: nothing a library prints can corrupt an answer.

Requests: {"op": "hello"} | {"op": "setup", "case": {...}} | {"op": "run", "case": ID, "iters": K}
| {"op": "release", "case": ID} | {"op": "ceiling", ...} (bert_jax only) | {"op": "close"}.
Answers: {"ok": true, ...} or {"ok": false, "error": "...", "traceback": "..."}.

Only numpy and the standard library here: this file is imported in every environment.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import traceback
from typing import Any, Callable


def protocol_channel():
  """The answer channel: the original stdout, with fd 1 (and sys.stdout) now writing to stderr. Call it
  once, first thing in a worker."""
  channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  return channel


def max_rss_bytes() -> int:
  """The process's high-water resident set size (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def serve(
  channel, peer: str, handlers: dict[str, Callable[[dict], dict]], versions: Callable[[], dict]
) -> None:
  """Answers requests until "close" or end of input. A failing request answers with its error; the
  worker keeps serving (the driver decides whether the run goes on). `channel`: protocol_channel(),
  taken by the worker before it imports any library."""
  for line in sys.stdin:
    if not line.strip():
      continue
    try:
      request = json.loads(line)
      op = request.get("op")
      if op == "close":
        channel.write(json.dumps({"ok": True}) + "\n")
        return
      if op == "hello":
        answer = {"peer": peer, "pid": os.getpid(), "python": platform.python_version(), **versions()}
      elif op in handlers:
        answer = handlers[op](request)
      else:
        raise ValueError(f"unknown request op {op!r}; this worker answers {['hello', 'close', *handlers]}")
      channel.write(json.dumps({"ok": True, **answer}) + "\n")
    except Exception as e:  # every failure goes back to the driver, which reports it
      channel.write(
        json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        + "\n"
      )


class Cases:
  """The cases a worker has built, and the setup / run / release requests every worker answers alike.

  `build(case, inputs)` returns (step, info, holder): `step()` runs one iteration to completion, `info` is
  reported at setup, `holder["loss"]` (train cases; holder None otherwise) is read after the warm-up.
  `on_release()` frees what the peer caches beyond the case itself (e.g. torch.compile's graphs)."""

  def __init__(self, build: Callable[[dict, dict], tuple], on_release: Callable[[], None] | None = None):
    self.build = build
    self.on_release = on_release
    self.steps: dict[str, Callable[[], Any]] = {}

  def setup(self, request: dict) -> dict:
    case = request["case"]
    rss_before = max_rss_bytes()
    step, info, holder = self.build(case, make_inputs(case))
    info.update(first_call(step, case["warmup"], rss_before))
    if holder is not None:
      info["loss_after_warmup"] = float(holder["loss"])
    self.steps[case["id"]] = step
    return info

  def run(self, request: dict) -> dict:
    return {"times": time_iterations(self.steps[request["case"]], request["iters"])}

  def release(self, request: dict) -> dict:
    import gc

    self.steps.pop(request["case"], None)
    gc.collect()
    if self.on_release is not None:
      self.on_release()
    return {}

  def handlers(self) -> dict[str, Callable[[dict], dict]]:
    return {"setup": self.setup, "run": self.run, "release": self.release}


def time_iterations(step: Callable[[], Any], iters: int) -> list[float]:
  """Seconds of each of `iters` calls; `step` returns only once its work is complete."""
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return times


def make_inputs(case: dict) -> dict:
  """The same random batch in every worker (numpy's PCG64 from the case's seed): ids avoid the special
  tokens (0-999 in BERT's vocabulary); no padding; one segment. MLM targets: case["predictions"]
  distinct positions per row, given both as BERT's gathered form (masked_positions/ids/weights) and
  HuggingFace's (labels = -100 except at those positions)."""
  import numpy as np

  batch, length, predictions = case["batch"], case["length"], case["predictions"]
  rng = np.random.default_rng(case["seed"])
  input_ids = rng.integers(1000, case["vocab_size"], size=(batch, length), dtype=np.int32)
  positions = np.sort(
    np.stack([rng.choice(length, size=predictions, replace=False) for _ in range(batch)]), axis=1
  ).astype(np.int32)
  rows = np.arange(batch)[:, None]
  masked_ids = input_ids[rows, positions]
  labels = np.full((batch, length), -100, np.int32)
  labels[rows, positions] = masked_ids
  return {
    "input_ids": input_ids,
    "attention_mask": np.ones((batch, length), np.int32),
    "token_type_ids": np.zeros((batch, length), np.int32),
    "masked_positions": positions,
    "masked_ids": masked_ids,
    "masked_weights": np.ones((batch, predictions), np.float32),
    "labels": labels,
  }


def first_call(step: Callable[[], Any], warmup: int, rss_before: int) -> dict:
  """Times the first call (compilation included wherever the peer compiles lazily), then `warmup` more
  calls that are not measured. `rss_before`: max_rss_bytes() before the case was built, so the delta
  covers its weights, optimizer state, compiled code and the working memory of its first calls."""
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  for _ in range(warmup):
    step()
  return {"first_call_s": first, "max_rss_delta_bytes": max_rss_bytes() - rss_before}
