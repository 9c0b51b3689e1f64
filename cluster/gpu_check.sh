#!/usr/bin/env bash
# The GPU paths, checked on a GPU machine as bare as a fresh cloud box (torch, torchvision, timm,
# pandas, pyarrow, scikit-learn, scikit-image, matplotlib, safetensors and pytest; no Ray,
# Optuna or wandb; grad-cam where present), in a few minutes:
#
#   cluster/gpu_check.sh OUT [--quick]
#
#   1. tests/gpu/ (AMP bf16 and fp16 against fp32, channels_last, the attention head, the
#      prefetch thread, augmentation on the GPU against the CPU's, a GPU checkpoint read on a
#      CPU, Grad-CAM on CUDA), its report in OUT/gpu-tests.xml;
#   2. `python -m search.bench input train limit --gpu` with resnet18 and `train limit` with
#      efficientnet_b0 (224 px, batches of 256, AMP), each record in OUT/bench-gpu-MODEL.json
#      (copy them to results/bench/ and run `python -m search.bench --readme`: GPU rows);
#   3. a short table of both, last.
# Everything it prints is kept in OUT/gpu-check.log too.
#
# Without a CUDA GPU the tests skip, saying why, and the bench runs at --quick sizes on the
# CPU (the plumbing: what CI runs). --quick on a GPU: small batches, seconds.
set -euo pipefail
out=${1:?usage: cluster/gpu_check.sh OUT [--quick]}
quick=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee "$out/gpu-check.log") 2>&1  # what it says, kept beside the records
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

if "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$python" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
    bench=(--gpu ${quick:+--quick})
else
    echo "no CUDA GPU visible: tests/gpu skip, and the bench runs at --quick sizes on the CPU (the plumbing only)"
    bench=(--quick)
fi

status=0
echo "== tests/gpu"
# -o addopts="": the project's pytest options name plugins a bare machine may lack (xdist)
"$python" -m pytest tests/gpu -o addopts="" -p no:cacheprovider -q -rs \
    --junitxml="$out/gpu-tests.xml" || status=$?

echo "== bench: resnet18 (input train limit), efficientnet_b0 (train limit)"
"$python" -m search.bench input train limit "${bench[@]}" --repeats 1 --model resnet18 \
    --out "$out/bench-gpu-resnet18.json" || status=$?
"$python" -m search.bench train limit "${bench[@]}" --repeats 1 --model efficientnet_b0 \
    --out "$out/bench-gpu-efficientnet_b0.json" || status=$?

echo "== summary"
"$python" - "$out" <<'PY' || status=$?
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

from search.bench.cli import table

out = Path(sys.argv[1])
tests = out / "gpu-tests.xml"
if tests.is_file():
    suite = ET.parse(tests).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    n, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    print(f"tests/gpu: {n - failed - skipped} passed, {failed} failed, {skipped} skipped")
rows = []
for record in sorted(out.glob("bench-gpu-*.json")):
    data = json.loads(record.read_text())
    model = data["params"]["model"]
    rows += [{**r, "measure": r["measure"] if model in r["measure"] else f"{model}: {r['measure']}"}
             for r in data["rows"]]
print(table(rows))
PY
exit $status
