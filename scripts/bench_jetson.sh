#!/usr/bin/env bash
# Benchmark the model zoo on a Jetson (Orin, Xavier) and write docs/benchmarks/<board>-<power mode>.md.
#
#   bash scripts/bench_jetson.sh                          # batch 1,4,8, fp32 and fp16
#   MODELS=googlenet,mobilenet_v2 bash scripts/bench_jetson.sh --iters 50
#
# The power mode decides the numbers (an Orin at 15 W is several times slower than at MAXN): it is read with
# `nvpmodel -q`, put in the report name and recorded in the report. Nothing here changes it; for the fastest
# steady numbers set it yourself first (sudo nvpmodel -m 0; sudo jetson_clocks) and say so when you publish.
# Backends: eager torch on CUDA (plain, fused), ORT CPU (the ARM cores, same thread count as torch), ORT CUDA,
# ORT TensorRT and native TensorRT (JetPack ships TensorRT). Extra arguments go to scripts/bench_zoo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODELS=${MODELS:-googlenet,inception_v3,resnet50,mobilenet_v2,mobilenet_v3_large}
BATCH=${BATCH:-1,4,8}
PRECISION=${PRECISION:-fp32,fp16}
BACKENDS=${BACKENDS:-torch,torch-fused,ort-cpu,ort-cuda,ort-trt,trt-engine}

if [ ! -f /etc/nv_tegra_release ] && ! grep -qi jetson /proc/device-tree/model 2>/dev/null; then
    echo "error: this is not a Jetson (no /etc/nv_tegra_release)" >&2
    echo "hint: use scripts/bench_gpu_server.sh on a server GPU, python scripts/bench_zoo.py on a CPU" >&2
    exit 2
fi
BOARD=$(tr -d '\0' < /proc/device-tree/model 2>/dev/null || echo jetson)
MODE=$(nvpmodel -q 2>/dev/null | sed -n 's/^NV Power Mode: *//p' | head -1 || true)
if [ -z "$MODE" ]; then
    echo "note: nvpmodel -q is not readable; the report will say the power mode is unknown (run with sudo to read it)" >&2
    MODE=unknown-power-mode
fi
MACHINE=${MACHINE:-$(echo "$BOARD-$MODE" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')}
echo "== $BOARD, power mode $MODE ($MACHINE)"
head -1 /etc/nv_tegra_release 2>/dev/null || true
jetson_clocks --show 2>/dev/null | head -20 || echo "note: jetson_clocks --show needs sudo; clocks are not recorded beyond the GPU devfreq" >&2

"$PY" scripts/bench_zoo.py --models "$MODELS" --backends "$BACKENDS" --batch "$BATCH" --precision "$PRECISION" \
    --threads "$(nproc)" --machine "$MACHINE" "$@"
