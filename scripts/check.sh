#!/usr/bin/env bash
# The test command (README, CI): lint and format (ruff), the layer contracts (import-linter), then
# the test suite. Extra arguments go to pytest, e.g. `bash scripts/check.sh tests/test_model.py`.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || exit 1
.venv/bin/lint-imports || exit 1
.venv/bin/python -m pytest "${@:-tests}"
code=$?
# pytest exits 5 when it collected no tests: a failure here, not a pass.
[ "$code" -eq 5 ] && { echo "no tests were collected"; exit 1; }
exit "$code"
