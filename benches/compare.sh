#!/usr/bin/env bash
# graftlm next to PyTorch + PEFT on the same files, same machine, one run (issue 8).
#
#   bash benches/compare.sh [--tokens N] [--shape smollm2-135m|tinyllama-1.1b]
#
# 1. makes (once) a random-weight HF checkpoint of a real shape and a PEFT LoRA r16 on every linear
#    (benches/make_bench_model.py; kept in $CARGO_TARGET_DIR/../bench-models, never committed);
# 2. runs graftlm's decode bench in checkpoint mode (cargo bench --bench decode, default backend)
#    and PyTorch + PEFT (benches/torch_decode.py) on those files, one after the other;
# 3. prints a Markdown table with both and the ratios graftlm / PyTorch and graftlm / ceiling,
#    where ceiling = measured read bandwidth / weight bytes (decode reads every weight per token).
# Needs python3 with torch, transformers, peft (pip install torch transformers peft).
set -euo pipefail
cd "$(dirname "$0")/.."
tokens=64
shape=smollm2-135m
while [ $# -gt 0 ]; do
    case "$1" in
        --tokens) tokens="$2"; shift 2 ;;
        --shape) shape="$2"; shift 2 ;;
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
g=$(GRAFTLM_BENCH_CHECKPOINT="$base" GRAFTLM_BENCH_ADAPTER="$lora" GRAFTLM_DECODE_TOKENS="$tokens" \
    cargo bench -q --profile dev --bench decode 2>/dev/null | tail -1)
t=$(python3 benches/torch_decode.py "$base" "$lora" --tokens "$tokens" --threads "$threads" 2>/dev/null | tail -1)

python3 - "$g" "$t" "$shape" "$threads" "$tokens" <<'PY'
import json, platform, subprocess, sys
g, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
shape, threads, tokens = sys.argv[3], sys.argv[4], sys.argv[5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
ceiling = g["read_gbps"] * 1e9 / g["weight_bytes"]
print(f"{shape}, f32, {g['weight_bytes'] / 1e6:.0f} MB of weights; {cpu}, {threads} threads; "
      f"read bandwidth {g['read_gbps']:.1f} GB/s → decode ceiling {ceiling:.1f} tok/s; torch {t['torch']}; "
      f"{tokens} tokens after a 16-token prompt, greedy, batch 1.\n")
rows = [
    ("decode, base (tok/s)", "decode_tok_s", True),
    ("decode, LoRA r16 separate (tok/s)", "decode_separate_tok_s", True),
    ("decode, LoRA merged (tok/s)", "decode_merged_tok_s", True),
    ("prefill, 128 tokens (tok/s)", "prefill_tok_s", False),
    ("open → first token (s)", "open_to_first_token_s", False),
    ("load + attach adapter (ms)", "load_attach_ms", False),
    ("peak RSS after load (MB)", "peak_rss_after_load", False),
]
print("| measure | graftlm | PyTorch + PEFT | graftlm / PyTorch | graftlm / ceiling |")
print("|---|---|---|---|---|")
for label, key, decode in rows:
    a, b = g.get(key), t.get(key)
    if a is None or b is None:
        continue
    scale = 1e-6 if key == "peak_rss_after_load" else 1.0
    ratio = a / b if b else float("nan")
    ceil = f"{a / ceiling:.2f}" if decode else ""
    print(f"| {label} | {a * scale:.2f} | {b * scale:.2f} | {ratio:.2f} | {ceil} |")
print("\n(For times and memory, a ratio below 1 means graftlm needs less. Speeds are best of three.)")
sep, base, merged = g["decode_separate_tok_s"], g["decode_tok_s"], g["decode_merged_tok_s"]
print(f"\ngraftlm: separate / merged = {sep / merged:.2f}, merged / base = {merged / base:.2f}; "
      f"peak RSS / weight bytes = {g['peak_rss_after_load'] / g['weight_bytes']:.2f}")
PY
