#!/usr/bin/env python3
"""Markdown table of graftlm's decode bench (checkpoint mode) next to benches/torch_decode.py.

    python3 benches/table.py GRAFTLM_JSON TORCH_JSON SHAPE THREADS TOKENS [GRAFTLM_F32_JSON]
                             [--llamacpp LLAMACPP_JSON DTYPE]

With GRAFTLM_F32_JSON (graftlm holding f32 weights, when GRAFTLM_JSON held 16-bit ones) it adds
the 16-bit / f32 ratios; with --llamacpp (benches/llamacpp_decode.py on a GGUF copy in DTYPE) a
graftlm / llama.cpp table.

Used by benches/compare.sh (CPU) and benches/cuda.sh (GPU). The ceiling is the measured read
bandwidth over the weight bytes (decoding reads every weight once per token): the host probe on
CPU, the GPU's own (measured by torch_decode.py) on CUDA.
"""
import json
import platform
import sys

args = sys.argv[1:]
llama = None
if "--llamacpp" in args:
    i = args.index("--llamacpp")
    llama, llama_dtype = json.loads(args[i + 1]), args[i + 2]
    del args[i:i + 3]
g, t = json.loads(args[0]), json.loads(args[1])
shape, threads, tokens = args[2], args[3], args[4]
g32 = json.loads(args[5]) if len(args) > 5 else None
wdtype = g.get("weight_dtype", "f32")
if t.get("device") == "cuda":
    where = f"{t.get('gpu', 'GPU')} (graftlm backend {g['backend']}, PyTorch cuda)"
else:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    where = f"{cpu}, {threads} threads"
gbps = g.get("read_gbps") or t.get("read_gbps")
ceiling = gbps * 1e9 / g["weight_bytes"] if gbps else None
limit = f"read bandwidth {gbps:.1f} GB/s → decode ceiling {ceiling:.1f} tok/s; " if ceiling else ""
print(f"{shape}, weights held as {wdtype} (PyTorch: {t.get('dtype', 'f32')}), {g['weight_bytes'] / 1e6:.0f} MB of weights; {where}; {limit}torch {t['torch']}; "
      f"{tokens} tokens after a 16-token prompt, greedy, batch 1.\n")
rows = [
    ("decode, base (tok/s)", "decode_tok_s", True),
    ("decode, LoRA r16 separate (tok/s)", "decode_separate_tok_s", True),
    ("decode, LoRA merged (tok/s)", "decode_merged_tok_s", True),
    ("prefill, 128 tokens (tok/s)", "prefill_tok_s", False),
    ("open → first token (s)", "open_to_first_token_s", False),
    ("load + attach adapter (ms)", "load_attach_ms", False),
    ("merge adapter (ms)", "merge_ms", False),
    ("unmerge adapter (ms)", "unmerge_ms", False),
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
    ceil = f"{a / ceiling:.2f}" if decode and ceiling else ""
    print(f"| {label} | {a * scale:.2f} | {b * scale:.2f} | {ratio:.2f} | {ceil} |")
print("\n(For times and memory, a ratio below 1 means graftlm needs less. graftlm's decode speeds are "
      "medians of alternating rounds, the other speeds best of three.)")
sep, base, merged = g.get("decode_separate_tok_s"), g["decode_tok_s"], g.get("decode_merged_tok_s")
if sep and merged:
    print(f"\ngraftlm: separate / merged = {sep / merged:.2f}, merged / base = {merged / base:.2f}; "
          f"peak RSS / weight bytes = {g['peak_rss_after_load'] / g['weight_bytes']:.2f}")
elif sep:
    # (Quantized weights take adapters separate only.)
    print(f"\ngraftlm: separate / base = {sep / base:.2f}; "
          f"peak RSS / weight bytes = {g['peak_rss_after_load'] / g['weight_bytes']:.2f}")


def side_by_side(title: str, left_name: str, left: dict, right_name: str, right: dict, ratio: str,
                 left_over_right: bool = False) -> None:
    """A second table: `right / left` (or `left / right`) per measure both runs have."""
    print(f"\n{title}")
    print(f"\n| measure | {left_name} | {right_name} | {ratio} |\n|---|---|---|---|")
    for label, key, _ in rows:
        a, b = left.get(key), right.get(key)
        if a is None or b is None:
            continue
        scale = 1e-6 if key == "peak_rss_after_load" else 1.0
        print(f"| {label} | {a * scale:.2f} | {b * scale:.2f} | {(a / b if left_over_right else b / a):.2f} |")


wide = g.get("decode_f32_same_run_tok_s")
if wide:
    print(f"\ngraftlm decode {wdtype} / f32, one process, alternating rounds: "
          f"{base:.2f} / {wide:.2f} = {base / wide:.2f}")
if g32:
    side_by_side(f"graftlm {wdtype} / graftlm f32 (same files, same run):",
                 "graftlm f32", g32, f"graftlm {wdtype}", g, "ratio")
if llama:
    side_by_side(f"graftlm ({wdtype}) / llama.cpp {llama.get('llama_cpp', '')} (GGUF {llama_dtype}, same weights, same run):",
                 "graftlm", g, "llama.cpp", llama, "graftlm / llama.cpp", left_over_right=True)
