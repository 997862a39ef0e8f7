#!/usr/bin/env bash
# The main job: set up, then train LeNet-300-100 on MNIST, prune it with SIMD groups, strip it,
# export it and print the results table. Extra arguments go to `python -m tfscalpel_jobs.main`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m tfscalpel_jobs.main "$@"
