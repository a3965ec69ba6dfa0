#!/usr/bin/env python3
"""PyTorch (+ PEFT) on the same files as graftlm's decode bench; prints one JSON object.

    python3 benches/torch_decode.py BASE_DIR [ADAPTER_DIR] [--tokens 64] [--threads 2] [--device cuda]

Same protocol as `cargo bench --bench decode` in checkpoint mode: a 16-token prompt, then greedy
decoding of N tokens one at a time with the KV cache (HF `generate`, eager, float32, CPU or
`--device cuda`); prefill of 128 tokens; with the adapter unmerged (PEFT) and after
`merge_and_unload()`. Speeds are the best of three runs. On a GPU it also measures the device's
read bandwidth (`read_gbps`, a sum over 2 GiB) for the decode ceiling.
"""
import argparse
import json
import resource
import time

import torch
import transformers


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def gpu_read_gbps() -> float:
    x = torch.ones(512 * 1024 * 1024, device="cuda")  # 2 GiB of f32
    best = 0.0
    for _ in range(5):
        sync("cuda")
        t = time.perf_counter()
        x.sum().item()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return best


def decode_tps(model, n: int) -> float:
    device = model.device.type
    prompt = torch.arange(1, 17, device=model.device).unsqueeze(0)
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    best = 0.0
    with torch.no_grad():
        model.generate(prompt, **dict(kw, max_new_tokens=2, min_new_tokens=2))  # warm up
        for _ in range(3):  # best of three, as graftlm's bench
            sync(device)
            t = time.perf_counter()
            model.generate(prompt, **kw)
            sync(device)
            best = max(best, n / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("adapter", nargs="?")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"],
                    help="dtype the model is loaded in (PyTorch computes in it)")
    args = ap.parse_args()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    dev = args.device
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(args.base, dtype=dtype).to(dev).eval()
    with torch.no_grad():
        model(torch.arange(1, 17, device=dev).unsqueeze(0))
    sync(dev)
    first = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    long = (torch.arange(128, device=dev) % 300 + 1).unsqueeze(0)
    prefill = 0.0
    with torch.no_grad():
        for _ in range(3):
            sync(dev)
            t = time.perf_counter()
            model(long)
            sync(dev)
            prefill = max(prefill, 128 / (time.perf_counter() - t))
    out = {"torch": torch.__version__, "open_to_first_token_s": first, "peak_rss_after_load": rss,
           "prefill_tok_s": prefill, "decode_tok_s": decode_tps(model, args.tokens), "device": dev,
           "dtype": args.dtype}
    if dev == "cuda":
        out["read_gbps"] = gpu_read_gbps()
        out["gpu"] = torch.cuda.get_device_name()
    if args.adapter:
        from peft import PeftModel

        t = time.perf_counter()
        pm = PeftModel.from_pretrained(model, args.adapter).to(dev).eval()
        sync(dev)
        out["load_attach_ms"] = (time.perf_counter() - t) * 1e3
        out["decode_separate_tok_s"] = decode_tps(pm, args.tokens)
        for key, step in (("merge_ms", pm.merge_adapter), ("unmerge_ms", pm.unmerge_adapter)):
            sync(dev)
            t = time.perf_counter()
            step()
            sync(dev)
            out[key] = (time.perf_counter() - t) * 1e3
        out["decode_merged_tok_s"] = decode_tps(pm.merge_and_unload(), args.tokens)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
