#!/usr/bin/env bash
# On the device machine (carry .whl): install the wheels bench/device/prepare.sh fetched, then
# bench/bench_gpu.py with the arguments given; logs and results to $OUT.
#   bash bench/device/run.sh --objects 4352 --loader-steps 60 --workers 4,8,14 --steps 30
set -o pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
# TorchCodec has no build for that image's torch: the shim decodes PNGs with torchvision.
export PYTHONPATH=/tmp/site:$PWD/bench/device/shim:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
cd bench && timeout "${BENCH_TIMEOUT:-420}" python3 bench_gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
