#!/usr/bin/env bash
# The GPU acceptance check (scripts/gpu_check.py): runs from this checkout, installs nothing.
#   bash scripts/gpu-check.sh [--out gpu-check.json]   # on a machine with one NVIDIA GPU
#   bash scripts/gpu-check.sh --cpu                    # the same stages, tiny, on the CPU
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/scripts/gpu_check.py" "$@"
