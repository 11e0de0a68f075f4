#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels gpu.sh needs on this project's device machine and the machine's
# image lacks. That image (Python 3.12, no network) has jax, flax, optax, orbax, tokenizers, safetensors, absl-py
# and PyYAML; of bert_jax's requirements the benchmark's import path needs only ml-collections besides (checked
# on CPU with grain, tensorflow-datasets, array-record, tensorboardX and seqeval made unimportable). Pure-Python
# wheels, so they install on any platform.
#
#   bash experiments/benchmarks/gpu_wheels.sh          # then carry .whl in the device call (gpu.sh says how)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
pin() { grep -E "^$1==" requirements.txt || { echo "gpu_wheels.sh: requirements.txt has no $1 pin" >&2; exit 1; }; }
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "$(pin ml-collections)"
ls -la .whl
