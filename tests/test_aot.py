"""Compile-only runs for TPU slices that are not attached: the real TPU compiler (libtpu, a test requirement)
compiles the runner's own steps on this CPU machine. Tiny models keep each compile to seconds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import aot, sharding, topology, train_state
from configs import embed as embed_configs
from configs import finetune as finetune_configs
from configs import pretrain as pretrain_configs
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- naming slices --------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name, generation, shape, chips",
  [
    ("v4-8", "v4", "2x2x1", 4),
    ("v4-32", "v4", "2x2x4", 16),
    ("v5p-8", "v5p", "2x2x1", 4),
    ("v5p-128", "v5p", "4x4x4", 64),
    ("v5litepod-16", "v5e", "4x4", 16),
    ("v5e-4", "v5e", "2x2", 4),
    ("v6e-8", "v6e", "2x4", 8),
    ("v5p:2x2x2", "v5p", "2x2x2", 8),
    ("V5E:2x2", "v5e", "2x2", 4),
  ],
)
def test_cloud_and_jax_names(name, generation, shape, chips):
  target = topology.parse(name)
  assert (target.generation, target.shape, target.chips) == (generation, shape, chips)


def test_bad_names_say_what_exists():
  with pytest.raises(topology.TopologyError, match="v5p-128"):
    topology.parse("tpu-9000")
  with pytest.raises(topology.TopologyError, match=r"sizes \[8, 16, 32"):
    topology.parse("v4-12")
  with pytest.raises(topology.TopologyError, match="3D grid"):
    topology.parse("v4:2x2")
  with pytest.raises(topology.TopologyError, match="--slices"):
    topology.parse("v4-8", slices=0)


@pytest.mark.parametrize(
  "name, slices, devices, hosts",
  [
    ("v4-8", 1, 4, 1),  # megacore: one device per chip, as a v4 pod runs
    ("v5litepod-8", 1, 8, 1),  # one 8-chip host, not libtpu's default 2x2 hosts
    ("v5litepod-16", 1, 16, 4),
    ("v5p-16", 1, 8, 2),
    ("v5e-4", 2, 8, 2),
  ],
)
def test_compile_only_devices(name, slices, devices, hosts):
  found = topology.devices(topology.parse(name, slices))
  assert len(found) == devices
  assert len({d.process_index for d in found}) == hosts
  assert {d.platform for d in found} == {"tpu"}
  assert len({getattr(d, "slice_index", 0) for d in found}) == slices
  assert topology.chip_for_device_kind(found[0].device_kind) is topology.CHIPS[topology.parse(name).generation]


def test_missing_libtpu_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(sys.modules, "libtpu", None)  # import libtpu now raises ImportError
  with pytest.raises(topology.TopologyError, match=r'pip install "jax\[tpu\]==0.10.2"'):
    topology.devices(topology.parse("v5e-4"))


def test_collectives_are_read_from_hlo():
  text = "\n".join(
    [
      "  %ag = bf16[8,128]{1,0} all-gather(bf16[2,128]{1,0} %p), dimensions={0}",
      "  %ar = (f32[4]{0}, f32[2,2]{1,0}) all-reduce(f32[4]{0} %a, f32[2,2]{1,0} %b), to_apply=%add",
      "  %ags = (bf16[2,128]{1,0}, bf16[8,128]{1,0}) all-gather-start(bf16[2,128]{1,0} %q)",
      "  %agd = bf16[8,128]{1,0} all-gather-done(%ags)",
    ]
  )
  assert aot.collectives(text) == {
    "all-gather": {"count": 2, "bytes": 2 * 8 * 128 * 2},
    "all-reduce": {"count": 1, "bytes": 4 * 4 + 4 * 4},
  }


# --- compiling the runner's steps -------------------------------------------------------------------


def _pretrain(strategy="fsdp", *, data=-1, fsdp=1, tensor=1, variant="tiny", objective="mlm", **changes):
  config = pretrain_configs.get_config(f"variant={variant},objective={objective}")
  with config.unlocked():
    config.model.vocab_size = 512
    config.data.max_seq_length = 64
    config.data.masking.max_predictions = 8
    config.batch_size = 16
    config.eval_every = 0
    config.mesh.strategy, config.mesh.data, config.mesh.fsdp, config.mesh.tensor = strategy, data, fsdp, tensor
    for key, value in changes.items():
      target = config
      *parents, leaf = key.split(".")
      for p in parents:
        target = target[p]
      target[leaf] = value
  return config


def _report(config, tmp_path, target="v5e:2x2", slices=1):
  report = aot.compile_only(config, str(tmp_path), target, slices)
  assert sorted(os.listdir(tmp_path)) == ["compile"]  # a compile-only run writes only its report
  return report


def _independent_memory(config, mesh, rules, batch_size, length, predictions):
  """The memory analysis of the same train step lowered by hand: model, optimizer and shardings built directly,
  not through the runner or bert_jax/aot.py."""
  from bert_jax import objectives, optim
  from bert_jax.models import BertConfig, BertForPreTraining

  model = BertForPreTraining(BertConfig.from_dict(config.model.to_dict()), nsp=False)
  tx = optim.make_optimizer(config.optimizer, total_steps=config.total_steps)
  abstract, shardings = train_state.state_shardings(model, tx, mesh, rules)
  step = jax.jit(
    train_state.train_step_fn(model, tx, objectives.get("mlm")),
    in_shardings=(shardings, sharding.batch_sharding(mesh)),
    donate_argnums=(0,),
  )
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  fields = [("input_ids", length), ("attention_mask", length), ("token_type_ids", length)]
  fields += [("masked_positions", predictions), ("masked_ids", predictions)]
  batch = {
    k: jax.ShapeDtypeStruct((batch_size, n), jnp.int32, sharding=sharding.batch_sharding(mesh)) for k, n in fields
  }
  batch["masked_weights"] = jax.ShapeDtypeStruct(
    (batch_size, predictions), jnp.float32, sharding=sharding.batch_sharding(mesh)
  )
  with train_state.mesh_context(mesh, rules):
    return step.lower(state, batch).compile().memory_analysis()


def test_fsdp_arguments_fall_as_one_over_n_and_match_xla(tmp_path):
  """Per chip, XLA's argument bytes equal the state's own shards plus the batch's (1%) and those of the same step
  lowered by hand; under fsdp over 4 chips each chip holds a quarter of every parameter sharded along embed and
  all of the few replicated ones (under 5%). Hidden size 512: each chip's 128 columns fill whole TPU tiles (narrower shards are padded to 128
  lanes, which XLA counts)."""
  sizes = dict(variant="L-1_H-512_A-8", **{"data.max_seq_length": 128, "data.masking.max_predictions": 128})
  fsdp = _report(_pretrain("fsdp", data=1, fsdp=-1, **sizes), tmp_path)["programs"][0]["hbm"]
  ours = sum(fsdp["arguments_by_part"].values())
  assert abs(fsdp["arguments"] - ours) <= 0.01 * ours, fsdp
  config = _pretrain("fsdp", data=1, fsdp=-1, **sizes)
  devices = topology.devices(topology.parse("v5e:2x2"))
  mesh, rules = sharding.from_config(config.mesh, devices=devices)
  from bert_jax import train

  run = train.build_run(config, 512, mesh, rules)
  sharded = replicated = 0
  for leaf, s in zip(jax.tree.leaves(run.abstract.params), jax.tree.leaves(run.shardings.params)):
    size = math.prod(leaf.shape) * leaf.dtype.itemsize
    if math.prod(s.shard_shape(leaf.shape)) * 4 == math.prod(leaf.shape):
      sharded += size
    else:
      replicated += size
  assert sharded > 0.95 * (sharded + replicated)
  want = sharded / 4 + replicated
  assert fsdp["arguments_by_part"]["params"] == pytest.approx(want, rel=0.01)
  # The report's numbers are XLA's for the step a run jits: the same step lowered by hand agrees.
  memory = _independent_memory(config, mesh, rules, 16, 128, 128)
  assert fsdp["arguments"] == memory.argument_size_in_bytes
  assert fsdp["temporaries"] == pytest.approx(memory.temp_size_in_bytes, rel=0.05)


@pytest.mark.parametrize(
  "target, strategy, mesh, changes",
  [
    ("v5e:2x2", "tp", dict(data=2, tensor=2), {}),
    (
      "v5e:2x2",
      "fsdp_tp",
      dict(data=1, fsdp=2, tensor=2),
      {
        "model.scan_layers": True,
        "model.remat": "full",
        "model.attention_kernel": "splash",
        "model.attention_dropout_rate": 0.0,
      },
    ),
    ("v4:2x2x2", "fsdp", dict(data=1, fsdp=-1), {"model.scan_layers": True, "model.remat": "dots"}),
    ("v4:2x2x2", "dp", dict(data=-1), {"objective": "mlm_nsp"}),
  ],
)
def test_strategies_compile_for_single_and_multi_host_slices(tmp_path, target, strategy, mesh, changes):
  config = _pretrain(strategy, **mesh, **changes)
  report = _report(config, tmp_path, target)
  (program,) = report["programs"]
  assert report["fits"] and program["hbm"]["fits"]
  assert report["target"]["hosts"] == (2 if target.startswith("v4") else 1)
  assert program["involuntary_rematerialization"] == 0
  assert program["cost"]["flops"] > 0 and program["roofline"]["seconds"] > 0
  assert 0 < program["roofline"]["mfu_ceiling"] <= 1.5
  # The TPU kernel chosen for the slice's platform (not the CPU host's), run per device: in the HLO as Mosaic.
  assert (program["mosaic_kernels"] > 0) == (changes.get("model.attention_kernel") == "splash")
  if strategy != "dp" or mesh.get("data", 1) != 1:
    assert program["collectives"], "a sharded step communicates"
  md = open(tmp_path / "compile" / f"{target.replace(':', '_')}.md").read()
  assert program["name"] in md


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  folder = tmp_path_factory.mktemp("ckpt")
  helpers.tiny_hf_folder(str(folder), "BertModel")
  return str(folder)


@pytest.mark.parametrize("task, packing", [("classification", True), ("choice", False)])
def test_finetuning_compiles(tmp_path, tiny_checkpoint, task, packing):
  config = finetune_configs.get_config(f"task={task}")
  with config.unlocked():
    config.init_from = tiny_checkpoint
    config.data.packing = packing
    config.data.max_seq_length = 32
    config.batch_size = config.eval_batch_size = 8
    config.mesh.strategy, config.mesh.data, config.mesh.fsdp = "fsdp", 1, -1
  report = _report(config, tmp_path)
  assert [p["name"].split(" (")[0] for p in report["programs"]] == ["train step", "predict step"]
  assert report["fits"]
  train_step = report["programs"][0]
  assert train_step["hbm"]["arguments_by_part"]["batch"] > 0
  if packing:
    assert any("packed" in n for n in train_step["notes"])


def test_finetuning_batch_is_the_runners_packed_batch():
  """The compile-only batch has the fields, dtypes and ranks the runner's packed batches have."""
  from bert_jax import finetune

  config = finetune_configs.get_config("task=classification")
  with config.unlocked():
    config.data.packing = True
  arrays = aot.finetune_batch(config, "classification", 4, 16, 2)
  lengths = np.array([3, 5, 2, 4])
  real = {
    "input_ids": np.ones((4, 16), np.int32),
    "attention_mask": (np.arange(16)[None] < lengths[:, None]).astype(np.int32),
    "token_type_ids": np.zeros((4, 16), np.int32),
    "labels": np.zeros((4,), np.int32),
  }
  packed = finetune.pack_rows(real, "classification", per_row=4).batch
  assert {k: (v.dtype, v.ndim) for k, v in arrays.items()} == {k: (v.dtype, v.ndim) for k, v in packed.items()}
  assert arrays["input_ids"].shape[0] >= packed["input_ids"].shape[0]  # the row count's upper bound


@pytest.mark.parametrize("pair, packed", [(True, False), (False, True)])
def test_pretraining_batch_is_the_pipelines(pair, packed):
  """Fields, dtypes and shapes of the compile-only batch equal masking.batch_features' (the pipeline's)."""
  from bert_jax.data import masking

  item = {
    "tokens": ["[CLS]", "a", "[SEP]"],
    "input_ids": [2, 7, 3],
    "token_type_ids": [0, 0, 0],
    "masked_positions": [1, 0],
    "masked_ids": [7, 0],
    "masked_weights": [1.0, 0.0],
  }
  if pair:
    item["pair_label"] = 1
  if packed:
    item["segment_ids"], item["position_ids"] = [1, 1, 1], [0, 1, 2]
  real = masking.batch_features([item, item], 16)
  ours = aot.pretraining_batch(2, 16, 2, "nsp" if pair else None, packed)
  assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {k: (v.shape, v.dtype) for k, v in real.items()}


def test_embed_compiles_for_one_chip(tmp_path):
  config = embed_configs.get_config()
  report = _report(config, tmp_path)
  (program,) = report["programs"]
  assert program["hbm"]["arguments_by_part"]["params"] > 80e6  # MiniLM's 22.7M float32 parameters
  assert not program["collectives"]


# --- the command line ------------------------------------------------------------------------------


def _main(*args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
    [sys.executable, "-m", "bert_jax.main", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
  )


def test_cli_reports_a_step_too_big_for_the_chip_and_exits_3(tmp_path):
  """A 4-layer model of hidden size 8192 (3.2B parameters) under dp: its float32 state alone (parameters and
  Adam's two moments, 38 GiB) exceeds a v5e chip's 16 GiB."""
  args = [
    "--config=configs/pretrain.py:variant=L-4_H-8192_A-64,objective=mlm",
    "--config.model.vocab_size=512",
    "--config.data.max_seq_length=32",
    "--config.batch_size=4",
    "--config.eval_every=0",
    f"--workdir={tmp_path}",
    "--compile_only=v5litepod-4",
  ]
  done = _main(*args)
  assert done.returncode == aot.EXIT_DOES_NOT_FIT, done.stderr[-2000:]
  report = json.load(open(tmp_path / "compile" / "v5litepod-4.json"))
  assert report["fits"] is False and report["versions"]["libtpu"] != "not installed"
  (program,) = report["programs"]
  # The TPU compiler itself refuses the step; its numbers are in the report.
  assert "exceeds available HBM" in program["compiler_refused"]
  assert program["hbm"]["total"] > 2 * topology.CHIPS["v5e"].hbm_bytes
  assert any("strategy=fsdp" in tip for tip in report["advice"])
  assert "Does not fit" in done.stdout and "Does not fit" in open(tmp_path / "compile" / "v5litepod-4.md").read()
  assert sorted(os.listdir(tmp_path)) == ["compile"]


def test_cli_bad_topology_lists_known_ones(tmp_path):
  done = _main("--config=configs/pretrain.py:variant=tiny", f"--workdir={tmp_path}", "--compile_only=v9-8")
  assert done.returncode != 0
  assert "unknown TPU topology 'v9-8'" in done.stderr and "v5litepod-16" in done.stderr
  assert not os.path.exists(tmp_path / "compile")


def test_batch_that_does_not_divide_names_the_numbers(tmp_path):
  config = _pretrain("dp", batch_size=6)
  with pytest.raises(sharding.ShardingError, match="global batch size 6 does not divide over the mesh's data x fsdp = 4"):
    aot.compile_only(config, str(tmp_path), "v5e:2x2")
