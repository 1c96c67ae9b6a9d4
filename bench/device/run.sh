#!/usr/bin/env bash
# On the device machine (carry .whl): every GPU measurement of issues 19 and 24 in one call,
# under 10 minutes (run it with the device tool's timeout_s 600). Installs the wheels
# bench/device/prepare.sh fetched, then
#   1. bench/bench_gpu.py model, loader, ops: samples/s, GPU utilisation and MFU of the default
#      and the paper config, each update lever on its own, the loader with 4, 8 and 14 workers;
#   2. bench/bisect_gpu.py: the default (and paper) config on each tree prepare.sh archived;
#   3. bench/bench_gpu.py compile: train.compile, plain and with CUDA graphs (last: slowest).
# Logs and results to $OUT (model/, bisect.json, compile/). Arguments go to step 1, e.g.
#   bash bench/device/run.sh --objects 3072 --loader-steps 40 --steps 20
set -o pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
# TorchCodec has no build for that image's torch: the shim decodes PNGs with torchvision.
export PYTHONPATH=/tmp/site:$PWD/bench/device/shim:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
mkdir -p "$OUT/model" "$OUT/compile" /tmp/trees
for archive in .whl/trees/*.tar.gz; do
  commit=$(basename "$archive" .tar.gz)
  mkdir -p "/tmp/trees/$commit" && tar -xzf "$archive" -C "/tmp/trees/$commit"
done
cp .whl/trees/order.txt /tmp/trees/ 2>/dev/null
cd bench
# One budget for the call: step 1 at most 270 s, the bisect at most 160 s, compile what is left
# of 585 s (the device tool's 600 less the install); each step's rows are in its log as it goes.
started=$(date +%s)
left() { echo $(( ${BUDGET:-585} - ($(date +%s) - started) )); }
timeout "${BENCH_TIMEOUT:-270}" python3 bench_gpu.py --out "$OUT/model" \
  --sections model,loader,ops "$@" 2>&1 | tee "$OUT/model/log.txt"
if [ -f /tmp/trees/order.txt ]; then
  cap=$(( $(left) - 120 < ${BISECT_TIMEOUT:-160} ? $(left) - 120 : ${BISECT_TIMEOUT:-160} ))
  [ "$cap" -gt 30 ] && timeout "$cap" python3 bisect_gpu.py --trees /tmp/trees \
    --out "$OUT/bisect.json" 2>&1 | tee "$OUT/bisect.log"
fi
[ "$(left)" -gt 30 ] && timeout "$(left)" python3 bench_gpu.py --out "$OUT/compile" \
  --sections compile --steps 20 2>&1 | tee "$OUT/compile/log.txt"
exit 0
