#!/usr/bin/env bash
# Sets up the environment (scripts/setup_env.sh) and runs the whole system end to end: `i2i demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec i2i demo "$@"
