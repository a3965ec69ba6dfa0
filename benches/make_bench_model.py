#!/usr/bin/env python3
"""Random-weight checkpoints of real shapes for `benches/compare.sh` (not committed: ~540 MB).

    python3 benches/make_bench_model.py OUT_DIR [--shape smollm2-135m|tinyllama-1.1b]

Writes OUT_DIR/<shape>/ (HF `LlamaForCausalLM`, f32 safetensors, config.json, the fixture tokenizer)
and OUT_DIR/<shape>-lora-r16/ (a PEFT LoRA, r 16, alpha 32, on every linear but the head, with
non-zero random B so that it changes the output). Existing outputs are kept.
"""
import argparse
import math
import shutil
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, get_peft_model

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    # TinyLlama/TinyLlama-1.1B
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False, rope_theta=10000.0),
}
REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests/fixtures/models/llama/hf"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    args = ap.parse_args()
    base, lora = args.out / args.shape, args.out / f"{args.shape}-lora-r16"
    if (base / "model.safetensors").is_file() and (lora / "adapter_model.safetensors").is_file():
        print(f"{base} and {lora} exist")
        return
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    s = SHAPES[args.shape]
    cfg = transformers.LlamaConfig(max_position_embeddings=2048, rms_norm_eps=1e-5, hidden_act="silu",
                                   bos_token_id=1, eos_token_id=2,
                                   **{k: v for k, v in s.items() if k != "rope_theta"},
                                   rope_parameters={"rope_type": "default", "rope_theta": s["rope_theta"]})
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
    model.save_pretrained(base)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / f, base / f)
    pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0,
                                          task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.01)
    pm.save_pretrained(lora)
    print(f"wrote {base} and {lora}")


if __name__ == "__main__":
    main()
