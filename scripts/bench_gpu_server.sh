#!/usr/bin/env bash
# Benchmark the model zoo on a server GPU (H100, A100, L40S, L4...) and write docs/benchmarks/<gpu>*.md.
#
#   bash scripts/bench_gpu_server.sh                       # all zoo models, batch 1,8,64,256, fp32 and fp16
#   MODELS=googlenet,resnet50 BATCH=1,8 bash scripts/bench_gpu_server.sh --iters 100
#
# Two passes, each a run of scripts/bench_zoo.py (extra arguments are passed on to both):
#   1. eager torch on CUDA (plain and fused), ORT CUDA (IO binding), ORT TensorRT, native TensorRT (add
#      torch-compile to BACKENDS for torch.compile: it compiles for minutes per model and batch size);
#      compute (device-resident inputs/outputs) and end-to-end (with host copies) reported apart;
#   2. the same with CUDA graphs replayed (ORT CUDA enable_cuda_graph, TensorRT EP trt_cuda_graph_enable, torch
#      CUDAGraph capture), written to <gpu>-cudagraph.md.
# Nothing here changes GPU settings: lock clocks yourself if you want steadier numbers
# (sudo nvidia-smi -pm 1; sudo nvidia-smi -lgc <max SM clock>), and say so when you publish them; the report
# records the clocks nvidia-smi shows at the time of the run either way.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
MODELS=${MODELS:-googlenet,inception_v3,resnet50,mobilenet_v2,mobilenet_v3_large}
BATCH=${BATCH:-1,8,64,256}
PRECISION=${PRECISION:-fp32,fp16}
BACKENDS=${BACKENDS:-torch,torch-fused,ort-cuda,ort-trt,trt-engine}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "error: no NVIDIA GPU here (nvidia-smi is missing or lists no GPU)" >&2
    echo "hint: run this on the GPU server; on a CPU machine use python scripts/bench_zoo.py" >&2
    exit 2
fi
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
MACHINE=${MACHINE:-$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')}

echo "== $GPU ($MACHINE)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,persistence_mode,pstate --format=csv
"$PY" - <<'PY'
import importlib.metadata as md
for d in ("torch", "onnxruntime-gpu", "tensorrt"):
    try:
        print(f"{d} {md.version(d)}")
    except md.PackageNotFoundError:
        print(f"{d} not installed")
try:
    import torch
    print("torch CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
except Exception as exc:  # noqa: BLE001
    print("torch:", exc)
PY
if [ "$(nvidia-smi --query-gpu=persistence_mode --format=csv,noheader | head -1)" != "Enabled" ]; then
    echo "note: persistence mode is off; the first CUDA call of each process pays driver start-up (reported as first-run cost)" >&2
fi

"$PY" scripts/bench_zoo.py --models "$MODELS" --backends "$BACKENDS" --batch "$BATCH" --precision "$PRECISION" \
    --device cuda --iters 60 --rounds 3 --max-time 1.0 --machine "$MACHINE" "$@"
"$PY" scripts/bench_zoo.py --models "$MODELS" --backends "${BACKENDS//torch-compile,/}" --batch "$BATCH" \
    --precision "$PRECISION" --device cuda --cuda-graph --iters 60 --rounds 3 --max-time 1.0 --machine "$MACHINE-cudagraph" "$@"
