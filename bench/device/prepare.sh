#!/usr/bin/env bash
# Here (a machine with PyPI): the wheels bench/bench_gpu.py needs on the device machine's image
# (Python 3.12, its own torch; see bench/device/run.sh), into the git-ignored .whl/ folder that
# a device call carries.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
for package in open_clip_torch==3.3.0 ftfy wcwidth webdataset braceexpand; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$package"
done
