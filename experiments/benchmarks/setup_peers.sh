#!/usr/bin/env bash
# Creates the virtual environment of the HuggingFace Flax peer (transformers 4.57.6, the last release with
# Flax classes) for experiments/benchmarks/bench.py. It conflicts with the main environment's pins
# (transformers 5, tokenizers), so it lives apart: by default in .venv-peers at the repository root.
#
#   bash experiments/benchmarks/setup_peers.sh            # create or update .venv-peers
#   PEERS_VENV=/tmp/peers bash experiments/benchmarks/setup_peers.sh
#
# jax, jaxlib and flax get the exact versions requirements.txt pins, so both JAX peers run the same XLA;
# numpy gets the main .venv's version when that exists. Not `transformers[flax]`: that extra pins
# jax 0.4.13 and flax 0.7. Running it again with everything in place installs nothing.
# Environment: PYTHON (default python3), PEERS_VENV (default .venv-peers), MAIN_VENV (default .venv).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
PEERS_VENV=${PEERS_VENV:-.venv-peers}
MAIN_VENV=${MAIN_VENV:-.venv}
TRANSFORMERS_VERSION=4.57.6

die() { echo "setup_peers.sh: $*" >&2; exit 1; }

pin() {  # the version requirements.txt pins for package $1
  local line
  line=$(grep -E "^$1==" requirements.txt || true)
  [ -n "$line" ] || die "requirements.txt has no '$1==VERSION' line (expected the core pins there)"
  echo "${line#*==}"
}

JAX=$(pin jax)
FLAX=$(pin flax)
OPTAX=$(pin optax)
SAFETENSORS=$(pin safetensors)
NUMPY=""
if [ -x "$MAIN_VENV/bin/python" ]; then
  NUMPY=$("$MAIN_VENV/bin/python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
fi
reqs=(
  "jax==$JAX" "jaxlib==$JAX" "flax==$FLAX" "optax==$OPTAX" "safetensors==$SAFETENSORS"
  "transformers==$TRANSFORMERS_VERSION" "numpy${NUMPY:+==$NUMPY}"
)

PY="$PEERS_VENV/bin/python"
if [ ! -x "$PY" ]; then
  "$PYTHON" -m venv "$PEERS_VENV" || die "could not create a virtual environment in $PEERS_VENV"
fi
# Keeps the environment out of git whatever the repository's .gitignore says.
[ -f "$PEERS_VENV/.gitignore" ] || echo '*' >"$PEERS_VENV/.gitignore"

# Already satisfied: install nothing (and touch no network).
if "$PY" - "${reqs[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for req in sys.argv[1:]:
  name, _, wanted = req.partition("==")
  try:
    have = version(name)
  except PackageNotFoundError:
    sys.exit(1)
  if wanted and have != wanted:
    sys.exit(1)
PYEOF
then
  echo "setup_peers.sh: $PEERS_VENV is up to date (${reqs[*]})"
  exit 0
fi

"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "${reqs[@]}"
"$PY" - <<'PYEOF'
import flax, jax, transformers
from transformers import FlaxBertForMaskedLM, FlaxBertModel  # noqa: F401  (fails loudly if Flax is missing)

print(f"setup_peers.sh: ready: jax {jax.__version__}, flax {flax.__version__}, transformers {transformers.__version__}")
PYEOF
