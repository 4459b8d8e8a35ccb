#!/usr/bin/env bash
# On a machine that reaches PyPI: download into .whl/ (ignored by git) the wheels that the GPU machine lacks, at the
# versions this environment has, for its Python (PYVER, default 3.12) on x86-64 Linux. check.sh installs them.
#   bash benchmarks/gpu/prepare_wheels.sh [DEST]
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.whl}
PYVER=${PYVER:-3.12}
PYTHON=${PYTHON:-python3}
# kornia, albumentations and theirs; open_clip_torch and those of its own the GPU image lacks (huggingface_hub and
# timm, which it imports); udcbench's own PyYAML and safetensors (each run writes model.safetensors); datasets
# without pyarrow (40 MiB: the HF dataset paths do not run on the GPU machine)
PACKAGES=(kornia kornia_rs albumentations albucore simsimd stringzilla pydantic pydantic_core annotated_types
          typing_inspection datasets dill multiprocess open_clip_torch ftfy wcwidth regex timm huggingface_hub hf_xet
          httpx2 httpcore2 h11 anyio idna truststore click tqdm PyYAML safetensors)
specs=()
for name in "${PACKAGES[@]}"; do
  version=$("$PYTHON" -m pip show "$name" 2>/dev/null | sed -n "s/^Version: //p" || true)
  specs+=("$name${version:+==$version}")
done
mkdir -p "$DEST"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${platforms[@]}" -d "$DEST" "${specs[@]}"
size=$(du -sm "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST" | wc -l) wheels, $size MiB"
if [ "$size" -gt 60 ]; then echo "over the 64 MiB a device call carries" >&2; exit 1; fi
