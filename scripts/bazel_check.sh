#!/usr/bin/env bash
# Build and test the Bazel targets offline with Debian's bazel-bootstrap (Bazel 4), as the README's
# Bazel section describes: WORKSPACE points platforms / rules_java / rules_proto at the
# Debian packages and rules_cc / remote_coverage_tools at in-repo stand-ins (third_party/bazel).
# Installs its Debian packages when missing. The py_test runs with .venv's python3 first on PATH.
# Run from anywhere:  scripts/bazel_check.sh      (or: .venv/bin/python -m pytest -m bazel)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/debian_packages.sh bazel-bootstrap bazel-bootstrap-data bazel-rules-java bazel-rules-proto build-essential
if [ ! -x .venv/bin/python3 ]; then
  echo "[bazel_check] .venv is missing: run scripts/setup.sh first" >&2
  exit 2
fi

export PATH="$PWD/.venv/bin:$PATH"
# A private output base per checkout, so concurrent checkouts do not share one Bazel server.
OUTPUT_USER_ROOT="${TFSCALPEL_BAZEL_ROOT:-$HOME/.cache/tfscalpel-bazel}"
BAZEL=(bazel --output_user_root="$OUTPUT_USER_ROOT" --batch)
echo "[bazel_check] $("${BAZEL[@]}" --version)"
started=$(date +%s)
"${BAZEL[@]}" build //... 2>&1
"${BAZEL[@]}" test --test_output=errors //... 2>&1
echo "[bazel_check] OK in $(( $(date +%s) - started )) s"
