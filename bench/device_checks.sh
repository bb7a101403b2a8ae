#!/usr/bin/env bash
# The checks that need hardware this project's CI and development machines lack, as one script:
#   1. the CUDA kernel tests on a real GPU (tests/cuda with QRT_TEST_REAL_GPU=1),
#   2. the integer kernel tests on the hardware VNNI path (when the CPU has AVX-512 VNNI),
#   3. bench/gpu/bench_gpu.py (GEMM/conv TOPS vs cuBLAS, model latency vs the CPU),
#   4. bench/bench_qgemm.py on the CPU's best path (GOPS per shape, 1 and 2 threads),
#   5. bench/compare_onnxruntime.py, 1 thread, batch 1 (qrt vs onnxruntime on this CPU),
#   6. bench/isa_peaks.py (the CPU's ceilings per instruction mix, vpdpbusd where present).
# Usage: OUT=results_dir bash bench/device_checks.sh [models...]
# Each step has its own time limit and writes its log under $OUT, so one slow or failing step does
# not cost the others. Expects qrt's run-time and test dependencies to be importable already.
set -u
OUT=${OUT:-bench/results/device}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1

# STEPS: which of bench_gpu vnni_tests cuda_tests qgemm compare_ort isa_peaks to run (default: all)
STEPS=" ${STEPS:-bench_gpu vnni_tests cuda_tests qgemm compare_ort isa_peaks} "
step() {  # step NAME LIMIT_S CMD...
  local name=$1 limit=$2; shift 2
  [[ "$STEPS" == *" ${name%_t[12]} "* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "step $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/machine.txt"
}

{
  lscpu | grep -E 'Model name|^CPU\(s\)|Flags' | sed 's/Flags:/Flags:/'
  nvidia-smi -L 2>&1 | head -4
  $PY -c 'import numba, llvmlite, numpy, onnx, onnxruntime; print("numba", numba.__version__, "llvmlite", llvmlite.__version__, "numpy", numpy.__version__, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)'
  $PY -c 'import numba_cuda; print("numba-cuda", numba_cuda.__version__)' 2>&1 | tail -1
  $PY -c 'from qrt.kernels.cpu import features; print("kernel path", features.default_path(), "can run vnni", features.can_run("vnni"))' 2>&1 | tail -1
} >"$OUT/machine.txt" 2>&1

XDIST=()
$PY -c 'import xdist' 2>/dev/null && XDIST=(-n 8)
MODEL_ARGS=()
for m in "$@"; do MODEL_ARGS+=(--model "$m"); done
# Most wanted first: GPU numbers, then the VNNI path's exactness, then the rest.
step bench_gpu 150 $PY bench/gpu/bench_gpu.py --repeat 20 --out "$OUT/bench_gpu.json" "${MODEL_ARGS[@]}"
if grep -q avx512_vnni /proc/cpuinfo; then
  step vnni_tests 120 env QRT_KERNEL_PATH=vnni $PY -m pytest -q "${XDIST[@]}" tests/kernels \
    tests/ops/test_qconv_fast.py
  GEMM_PATHS=vnni
else
  GEMM_PATHS=avx2
fi
step cuda_tests 100 env QRT_TEST_REAL_GPU=1 $PY -m pytest -q "${XDIST[@]}" tests/cuda
step isa_peaks 30 $PY bench/isa_peaks.py --repeat 3
step qgemm_t1 50 $PY bench/bench_qgemm.py --quick --threads 1 --paths $GEMM_PATHS
step qgemm_t2 40 $PY bench/bench_qgemm.py --quick --threads 2 --paths $GEMM_PATHS
step compare_ort 240 $PY bench/compare_onnxruntime.py \
  --models "${COMPARE_MODELS:-demo,ppocr_cls,ppocr_rec,transformer,transformer_d256}" \
  --threads 1 --batches 1 --runs 20 --no-cold --out "$OUT/compare.json"
exit 0
