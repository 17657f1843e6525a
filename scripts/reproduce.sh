#!/usr/bin/env bash
# Thin wrapper: the full reproduction (paper + beyond-paper modes), README section updated.
set -euo pipefail
cd "$(dirname "$0")/.."
exec invphys reproduce --out docs/results --readme README.md "$@"
