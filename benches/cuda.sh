#!/usr/bin/env bash
# graftlm on an NVIDIA GPU (issue 8): the parity and adapter tests on the `cuda` backend, then the
# decode bench next to PyTorch (+ PEFT) on the same GPU and files.
#
#   bash benches/cuda.sh [--shapes "smollm2-135m tinyllama-1.1b"] [--tokens N] [--dtypes "f32 bf16"]
#       builds with cargo (features `cuda`), then runs everything below (the decode bench once per
#       weight dtype, PyTorch in the same dtype);
#   bash benches/cuda.sh pack DIR
#       only builds and copies the four programs into DIR (for a GPU machine without Rust; set
#       CUDARC_CUDA_VERSION, e.g. 13000, when this machine has no nvcc to read the version from);
#   bash benches/cuda.sh run DIR [--shapes ...] [--tokens N] [--dtypes ...] [--tests "parity ..."]
#       runs the programs from DIR (made by `pack`) in this checkout. `--tests ""` runs the
#       benchmarks only, `--shapes ""` the tests only.
#
# Needs an NVIDIA driver and the CUDA runtime libraries (libcuda, libnvrtc) at run time, and python3
# with torch (CUDA), transformers and peft for the bench models and the PyTorch column. The
# driver's own libcuda must come first on LD_LIBRARY_PATH (not CUDA's `compat` copy): the script puts
# /usr/local/nvidia/lib64 (where the driver is mounted in containers) and the folder of the first
# libnvrtc.so.* it finds there, and sets CUDA_PATH (burn compiles its kernels with NVRTC and the
# toolkit's headers) from nvcc when unset. Logs and the
# tables go to $OUT when it is set (else ./cuda-out). Tests that fail are reported, and the
# benchmarks still run. GRAFTLM_CUDA_TEST_TIMEOUT (seconds, default 900) bounds each test program.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graftlm/target}"
all_tests=(parity lora_families llama_adapter)

pack() {
    local dir="$1"
    mkdir -p "$dir"
    local args=(--profile gpu --features cuda --message-format=json --no-run)
    { cargo test "${args[@]}" "${all_tests[@]/#/--test=}" && cargo bench "${args[@]}" --bench decode; } |
        python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["kind"] in (["test"], ["bench"]):
        shutil.copy(exe, sys.argv[1] + "/" + m["target"]["name"])
        print("packed", m["target"]["name"], file=sys.stderr)
' "$dir" || exit 1
    strip "$dir"/* 2>/dev/null || true
}

mode=build
if [ "${1:-}" = pack ]; then
    pack "${2:?pack DIR}"
    exit 0
elif [ "${1:-}" = run ]; then
    mode=run
    bin="${2:?run DIR}"
    shift 2
fi
shapes="smollm2-135m"
tokens=64
dtypes="f32"
tests="${all_tests[*]}"
while [ $# -gt 0 ]; do
    case "$1" in
        --shapes) shapes="$2"; shift 2 ;;
        --tokens) tokens="$2"; shift 2 ;;
        --dtypes) dtypes="$2"; shift 2 ;;
        --tests) tests="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
out="${OUT:-cuda-out}"
mkdir -p "$out"
if [ "$mode" = build ]; then
    bin="$CARGO_TARGET_DIR/cuda-bin"
    pack "$bin"
fi
export CARGO_MANIFEST_DIR="$PWD"   # where the tests find their fixtures
if [ -z "${CUDA_PATH:-}" ] && command -v nvcc >/dev/null; then
    CUDA_PATH="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
    export CUDA_PATH
fi
# The toolkit's own NVRTC first (never a `stubs` copy), then the system's.
nvrtc=$(for d in "${CUDA_PATH:-/usr/local/cuda}"/lib64 "${CUDA_PATH:-/usr/local/cuda}"/targets/*/lib /usr/lib/x86_64-linux-gnu; do
    find "$d" -maxdepth 1 -name 'libnvrtc.so*' 2>/dev/null | sort | head -1
done | head -1)
export LD_LIBRARY_PATH="/usr/local/nvidia/lib64${nvrtc:+:$(dirname "$nvrtc")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "CUDA_PATH=${CUDA_PATH:-unset} LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi -L || true

status=0
for t in $tests; do
    echo "== $t (cuda)"
    # The CUDA tests are named `cuda::…` (parity) or `cuda_…` (adapters).
    timeout "${GRAFTLM_CUDA_TEST_TIMEOUT:-900}" "$bin/$t" cuda --test-threads=4 2>&1 | tee "$out/test-$t.log" | grep -E "^test |test result|panicked|error" | head -80
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
done

models="${GRAFTLM_BENCH_MODELS:-$(dirname "$CARGO_TARGET_DIR")/bench-models}"
# One round (base, separate, merged; each the best of three): at batch 1 a GPU decodes a small
# model at ~30 tokens/s (launch-bound), so three rounds took minutes (RESULTS, session 13).
export GRAFTLM_BENCH_ROUNDS="${GRAFTLM_BENCH_ROUNDS:-1}"
for shape in $shapes; do
    echo "== decode bench, $shape"
    python3 benches/make_bench_model.py "$models" --shape "$shape" >&2 || { status=1; continue; }
    base="$models/$shape"
    lora="$models/$shape-lora-r16"
    for dt in $dtypes; do
        g=$(GRAFTLM_BENCH_BACKEND=cuda GRAFTLM_BENCH_CHECKPOINT="$base" GRAFTLM_BENCH_ADAPTER="$lora" \
            GRAFTLM_BENCH_WEIGHT_DTYPE="$dt" GRAFTLM_DECODE_TOKENS="$tokens" \
            timeout "${GRAFTLM_CUDA_BENCH_TIMEOUT:-600}" "$bin/decode" 2>"$out/decode-$shape-$dt.err" | tail -1)
        t=$(python3 benches/torch_decode.py "$base" "$lora" --tokens "$tokens" --device cuda --dtype "$dt" \
            2>"$out/torch-$shape-$dt.err" | tail -1)
        echo "$g" >"$out/graftlm-$shape-$dt.json"
        echo "$t" >"$out/torch-$shape-$dt.json"
        python3 benches/table.py "$g" "$t" "$shape" "$(nproc)" "$tokens" | tee "$out/table-$shape-$dt.md" || status=1
    done
done
exit $status
