#!/usr/bin/env bash
# The prepared GPU check (README.md beside this file): installs udcbench without its dependencies, plus the wheels
# that prepare_wheels.sh put in .whl/, then runs check.py. Arguments go to check.py (--cpu: the CPU fallback).
#   bash benchmarks/gpu/check.sh            # on the GPU machine; the CSV lands in $OUT (else benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELS=${UDCBENCH_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  site=$(mktemp -d)  # the carried wheels, installed apart from the machine's own packages
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! (cd / && "$PYTHON" -c "import udcbench" 2>/dev/null); then
  # the packages themselves, without dependencies; where pip cannot build it, the source tree on the path
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/dev/null \
    || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu/check.py --out "${OUT:-benchmarks/results}" "$@"
