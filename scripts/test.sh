#!/usr/bin/env bash
# The test command: install what is needed, lint, type-check, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy src
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -q "$@"
