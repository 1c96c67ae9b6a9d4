#!/usr/bin/env bash
# Here (a machine with PyPI and the git history): the wheels bench/bench_gpu.py needs on the
# device machine's image (Python 3.12, its own torch; see bench/device/run.sh), and the trees
# bench/bisect_gpu.py measures (`git archive` of each commit in BISECT, oldest first), into the
# git-ignored .whl/ folder that a device call carries.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
for package in open_clip_torch==3.3.0 ftfy wcwidth webdataset braceexpand; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$package"
done
# a5873ca: before the recipe merge (BENCHMARKS' "before"); the first-parent merges of main
# that touched the training path after it; b2135b8: before issue 24.
BISECT="${BISECT:-a5873ca 84ad841 adbaec1 0f6c225 b2135b8}"
rm -rf .whl/trees && mkdir -p .whl/trees
for commit in $BISECT; do
  git archive --format=tar.gz -o ".whl/trees/$commit.tar.gz" "$commit" cg3d bench params.yaml configs
done
echo "$BISECT" > .whl/trees/order.txt
du -sh .whl
