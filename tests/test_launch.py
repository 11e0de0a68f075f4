"""launch.sh's pod and cluster modes (dry runs: the exact commands a user would run) and the
environment detection behind jax.distributed start-up."""

from __future__ import annotations

import os
import subprocess

import pytest

from bert_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_VARS = (
  "JAX_COORDINATOR_ADDRESS",
  "JAX_NUM_PROCESSES",
  "JAX_PROCESS_ID",
  "NUM_NODES",
  "NODE_RANK",
  "SLURM_JOB_ID",
  "SLURM_NTASKS",
  "SLURM_PROCID",
  "SLURM_JOB_NODELIST",
  "TPU_WORKER_HOSTNAMES",
)


def launch(*args, **env):
  base = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
  return subprocess.run(
    ["bash", "launch.sh", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(base, **env)
  )


def test_tpu_dry_run_prints_copy_setup_check_and_run_on_every_worker():
  result = launch(
    "tpu",
    "my-pod",
    "us-central2-b",
    "--workers",
    "4",
    "--dry-run",
    "--",
    "--config=configs/demo.py",
    "--workdir=/gcs/bucket/run",
  )
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert "git ls-files -z --cached --others --exclude-standard | tar" in out
  assert (
    "gcloud compute tpus tpu-vm scp .launch/bert_jax-code.tar.gz my-pod:bert_jax-code.tar.gz "
    "--zone us-central2-b --worker=all" in out
  )
  assert "jax\\[tpu\\]==0.10.2" in out and "bert_jax-check" in out
  for w in range(4):
    assert (
      f"--worker={w} --command cd\\ ~/bert_jax\\ \\&\\&\\ .venv/bin/python\\ -m\\ bert_jax.main\\ "
      "--config=configs/demo.py\\ --workdir=/gcs/bucket/run\\ --distributed=auto > "
      f"logs/tpu-my-pod/worker-{w}.log 2>&1 &"
    ) in out
  assert "--worker=4" not in out


def test_url_workdir_is_refused_before_any_worker_is_touched():
  for mode in (["tpu", "pod", "zone", "--dry-run"], ["gpu", "--dry-run"]):
    result = launch(
      *mode, "--", "--config=configs/demo.py", "--workdir=gs://bucket/run", JAX_COORDINATOR_ADDRESS="h:1"
    )
    assert result.returncode == 2 and not result.stdout
    assert "--workdir gs://bucket/run is a URL" in result.stderr and "Cloud Storage" in result.stderr
  result = launch("tpu", "pod", "zone", "--dry-run", "--", "--workdir", "s3://bucket/run")
  assert result.returncode == 2 and "--workdir s3://bucket/run is a URL" in result.stderr


def test_tpu_gcs_mounts_the_bucket_on_every_worker_before_the_job():
  result = launch(
    "tpu",
    "pod",
    "zone",
    "--workers",
    "2",
    "--gcs",
    "my-bucket",
    "--dry-run",
    "--",
    "--workdir=/gcs/my-bucket/run",
  )
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  mount = [i for i, line in enumerate(lines) if "gcsfuse\\ --implicit-dirs\\ --rename-dir-limit" in line]
  jobs = [i for i, line in enumerate(lines) if "bert_jax.main" in line]
  assert (
    len(mount) == 1 and "--worker=all" in lines[mount[0]] and "my-bucket\\ /gcs/my-bucket" in lines[mount[0]]
  )
  assert len(jobs) == 2 and mount[0] < min(jobs)
  for bad in ("gs://my-bucket", "My_Bucket", "b"):
    result = launch("tpu", "pod", "zone", "--gcs", bad, "--dry-run", "--", "--workdir=w")
    assert result.returncode == 2 and "is not a bucket name" in result.stderr


def test_tpu_dry_run_without_worker_count_shows_the_query():
  result = launch("tpu", "pod", "zone", "--dry-run", "--", "--workdir=w")
  assert result.returncode == 0, result.stderr
  assert "describe pod --zone zone --format='value(networkEndpoints.len())'" in result.stdout


def test_gpu_dry_run_from_explicit_environment_and_from_slurm():
  result = launch(
    "gpu",
    "--dry-run",
    "--",
    "--workdir=/runs/x",
    JAX_COORDINATOR_ADDRESS="10.0.0.1:1234",
    JAX_NUM_PROCESSES="4",
    JAX_PROCESS_ID="2",
  )
  assert result.returncode == 0, result.stderr
  assert "bash launch.sh setup --gpu" in result.stdout
  assert (
    "env JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=2 .venv/bin/python -m "
    "bert_jax.main --workdir=/runs/x --distributed=on 2>&1 | tee logs/gpu/node-2.log"
  ) in result.stdout
  result = launch(
    "gpu",
    "--port",
    "9999",
    "--dry-run",
    "--",
    "--workdir=w",
    SLURM_JOB_ID="7",
    SLURM_NTASKS="2",
    SLURM_PROCID="1",
    SLURM_JOB_NODELIST="gpu-a,gpu-b",
    PATH="/usr/bin:/bin",
  )
  assert result.returncode == 0, result.stderr
  assert "JAX_COORDINATOR_ADDRESS=gpu-a:9999 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1" in result.stdout


def test_launch_errors_say_what_to_set():
  result = launch("gpu", "--dry-run", "--", "--workdir=w")
  assert result.returncode == 2 and "set JAX_COORDINATOR_ADDRESS (host:port of node 0)" in result.stderr
  result = launch("tpu", "pod", "zone", "--dry-run")
  assert result.returncode == 2 and "give the main job's arguments after --" in result.stderr
  result = launch("tpu", "pod", "zone", "--bogus", "--", "x")
  assert result.returncode == 2 and "unknown option '--bogus'" in result.stderr
  result = launch("frobnicate")
  assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr


def test_cluster_detection_from_environment():
  assert distributed.cluster_from_env({}) is None
  assert distributed.cluster_from_env(
    {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
  ) == {"kind": "explicit", "coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
  with pytest.raises(ValueError, match=r"\['JAX_PROCESS_ID'\] are not"):
    distributed.cluster_from_env({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})
  assert distributed.cluster_from_env({"SLURM_NTASKS": "4"}) == {"kind": "slurm"}
  assert distributed.cluster_from_env({"SLURM_NTASKS": "1"}) is None
  assert distributed.cluster_from_env({"TPU_WORKER_HOSTNAMES": "a,b"}) == {"kind": "tpu"}
  assert distributed.cluster_from_env({"TPU_WORKER_HOSTNAMES": "a"}) is None  # a single-host TPU VM
  assert distributed.initialize("auto", env={}) is False
  assert distributed.initialize("off", env={"SLURM_NTASKS": "4"}) is False
  with pytest.raises(ValueError, match="distributed mode 'maybe'"):
    distributed.initialize("maybe", env={})


def test_tpu_preflight_refuses_a_job_that_does_not_fit_before_touching_the_pod():
  """--accelerator compiles the job here for that slice first (bert_jax/aot.py); a 3.2B-parameter model under dp
  does not fit a v5e chip, so nothing is copied, installed or started (no gcloud call at all)."""
  args = ["--config=configs/pretrain.py:variant=L-4_H-8192_A-64,objective=mlm", "--config.model.vocab_size=512"]
  args += ["--config.data.max_seq_length=32", "--config.batch_size=4", "--config.eval_every=0", "--workdir=/gcs/b/run"]
  dry = launch("tpu", "pod", "zone", "--accelerator", "v5litepod-4", "--dry-run", "--", *args)
  assert dry.returncode == 0, dry.stderr
  first = dry.stdout.splitlines()[1]
  assert "--compile_only=v5litepod-4" in first and "--workdir=.launch/preflight-pod" in first
  result = subprocess.run(
    ["bash", "launch.sh", "tpu", "pod", "zone", "--accelerator", "v5litepod-4", "--workers", "1", "--", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env=dict(os.environ, PATH="/usr/bin:/bin"),  # no gcloud here: a call to it would fail differently
  )
  assert result.returncode == 2, result.stderr[-2000:]
  assert "does not fit v5litepod-4" in result.stderr and "nothing was started" in result.stderr
  assert "Does not fit" in result.stdout
  assert "gcloud" not in result.stderr + result.stdout
