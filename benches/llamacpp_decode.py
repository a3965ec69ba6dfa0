#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) on a GGUF copy of the benchmark checkpoint; prints one JSON
object with the keys of graftlm's decode bench (decode, prefill, open → first token, peak RSS).

    python3 benches/llamacpp_decode.py MODEL.gguf [--tokens 64] [--threads N]

Decoding feeds one token at a time after a 16-token prompt (greedy choice is irrelevant for the
speed of random weights); prefill evaluates a 128-token prompt in one batch. Best of three, as
graftlm's bench. Needs `pip install llama-cpp-python` (builds llama.cpp locally).
"""
import argparse
import json
import os
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    import llama_cpp
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=a.gguf, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=512,
                n_batch=128, use_mmap=True, verbose=False)
    prompt = list(range(3, 19))
    llm.eval(prompt)
    first = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def decode() -> float:
        llm.reset()
        llm.eval(prompt)
        t = time.perf_counter()
        for i in range(a.tokens):
            llm.eval([20 + i % 200])
        return a.tokens / (time.perf_counter() - t)

    def prefill() -> float:
        llm.reset()
        ids = [3 + i % 300 for i in range(128)]
        t = time.perf_counter()
        llm.eval(ids)
        return len(ids) / (time.perf_counter() - t)

    out = {
        "engine": "llama.cpp",
        "llama_cpp": llama_cpp.__version__,
        "open_to_first_token_s": first,
        "peak_rss_after_load": rss,
        "prefill_tok_s": max(prefill() for _ in range(3)),
        "decode_tok_s": max(decode() for _ in range(3)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
