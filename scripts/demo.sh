#!/usr/bin/env bash
# The main job: two "pods" (network namespaces) on pycni's built-in default network
# (bridge pycni0 + host-local, masquerade in pycni's own nftables table) ping each other,
# then everything is torn down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pycni demo --net pycni "$@"
