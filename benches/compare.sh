#!/usr/bin/env bash
# graftlm next to PyTorch + PEFT on the same files, same machine, one run (issue 8).
#
#   bash benches/compare.sh [--tokens N] [--rounds N] [--shape smollm2-135m|tinyllama-1.1b]
#                           [--weight-dtype bf16|f16|q8_0|q4_0]
#
# --rounds sets how many alternating rounds graftlm's decode bench measures base, separate and
# merged in (default 5; each figure is the median of its rounds): with three, separate / merged
# swung 0.86–0.94 between runs minutes apart on the 2-core VM (20 alternating rounds of
# separate against the adapter switched off gave 0.922 in bf16 and 0.937 in f32).
#
# --weight-dtype holds graftlm's weights in 16 bits (rounding the f32 files) and loads PyTorch in
# that dtype; graftlm in f32 runs too, for the ratio 16-bit / f32 (issue 8: ≥ 1.8). q8_0 / q4_0
# quantize graftlm's linears at load and run llama.cpp on a GGUF quantized to the same type;
# PyTorch has no matching CPU path and runs in f32 (labelled so).
#
# 1. makes (once) a random-weight HF checkpoint of a real shape and a PEFT LoRA r16 on every linear
#    (benches/make_bench_model.py; kept in $CARGO_TARGET_DIR/../bench-models, never committed);
# 2. runs graftlm's decode bench in checkpoint mode (cargo bench --bench decode, default backend)
#    and PyTorch + PEFT (benches/torch_decode.py) on those files, one after the other;
# 3. prints a Markdown table with both and the ratios graftlm / PyTorch and graftlm / ceiling,
#    where ceiling = measured read bandwidth / weight bytes (decode reads every weight per token);
# 4. with llama-cpp-python (and gguf) installed, adds llama.cpp on a GGUF copy of the same
#    weights (benches/make_gguf.py, benches/llamacpp_decode.py): f32, f16 for 16-bit runs, or
#    the same block type for q8_0 / q4_0.
# Needs python3 with torch, transformers, peft (pip install torch transformers peft).
set -euo pipefail
cd "$(dirname "$0")/.."
tokens=64
rounds=5
shape=smollm2-135m
wdtype=f32
while [ $# -gt 0 ]; do
    case "$1" in
        --tokens) tokens="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --shape) shape="$2"; shift 2 ;;
        --weight-dtype) wdtype="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graftlm/target}"
models="$(dirname "$CARGO_TARGET_DIR")/bench-models"
threads="$(nproc)"
python3 benches/make_bench_model.py "$models" --shape "$shape" >&2
base="$models/$shape"
lora="$models/$shape-lora-r16"

cargo bench -q --profile dev --bench decode --no-run >&2
graftlm() {
    GRAFTLM_BENCH_CHECKPOINT="$base" GRAFTLM_BENCH_ADAPTER="$lora" GRAFTLM_DECODE_TOKENS="$tokens" \
        GRAFTLM_BENCH_ROUNDS="$rounds" GRAFTLM_BENCH_WEIGHT_DTYPE="$1" cargo bench -q --profile dev --bench decode 2>/dev/null | tail -1
}
g=$(graftlm "$wdtype")
tdt="$wdtype"
case "$wdtype" in q8_0|q4_0) tdt=f32 ;; esac
t=$(python3 benches/torch_decode.py "$base" "$lora" --tokens "$tokens" --threads "$threads" \
    --dtype "$tdt" 2>/dev/null | tail -1)
g32=""
if [ "$wdtype" != f32 ]; then g32=$(graftlm f32); fi

# llama.cpp, when llama-cpp-python is installed: a GGUF copy of the same weights (f32 for an f32
# run, f16 for a 16-bit one; written once next to the checkpoint by benches/make_gguf.py).
llama=()
if python3 -c "import llama_cpp, gguf" 2>/dev/null; then
    case "$wdtype" in
        f32) gdt=f32 ;;
        q8_0|q4_0) gdt="$wdtype" ;;
        *) gdt=f16 ;;
    esac
    gf="$models/$shape-$gdt.gguf"
    [ -f "$gf" ] || python3 benches/make_gguf.py "$base" "$gf" --dtype "$gdt" >&2
    l=$(python3 benches/llamacpp_decode.py "$gf" --tokens "$tokens" --threads "$threads" 2>/dev/null | tail -1)
    llama=(--llamacpp "$l" "$gdt")
else
    echo "(llama.cpp column skipped: pip install llama-cpp-python gguf)" >&2
fi

python3 benches/table.py "$g" "$t" "$shape" "$threads" "$tokens" $g32 "${llama[@]}"
