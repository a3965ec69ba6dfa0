#!/usr/bin/env python3
"""Writes a GGUF copy of a benchmark checkpoint (benches/make_bench_model.py) for llama.cpp.

    python3 benches/make_gguf.py MODEL_DIR OUT.gguf [--dtype f32|f16|q8_0|q4_0]

Only for timing: the weights are the checkpoint's (random) weights with the same shapes, in
llama.cpp's `llama` architecture; Q/K are not permuted into llama.cpp's rotary layout and the
vocabulary is a placeholder of the right size, so the text is meaningless — the speed is what
matters. Needs numpy, safetensors and gguf (`pip install gguf`).
"""
import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import gguf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", choices=["f32", "f16", "q8_0", "q4_0"], default="f32")
    a = ap.parse_args()
    cfg = json.loads((a.model_dir / "config.json").read_text())
    w = load_file(str(a.model_dir / "model.safetensors"))
    e, nl = cfg["hidden_size"], cfg["num_hidden_layers"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    vocab = cfg["vocab_size"]

    out = gguf.GGUFWriter(str(a.out), "llama")
    out.add_name(a.model_dir.name)
    out.add_context_length(cfg.get("max_position_embeddings", 2048))
    out.add_embedding_length(e)
    out.add_block_count(nl)
    out.add_feed_forward_length(cfg["intermediate_size"])
    out.add_head_count(nh)
    out.add_head_count_kv(nkv)
    out.add_rope_dimension_count(e // nh)
    out.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    out.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    out.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
        }[a.dtype]
    )
    # A placeholder SentencePiece-style vocabulary of the model's size (byte tokens included).
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(vocab - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab - 259)
    out.add_tokenizer_model("llama")
    out.add_token_list(tokens)
    out.add_token_scores([0.0] * vocab)
    out.add_token_types(types)
    out.add_bos_token_id(1)
    out.add_eos_token_id(2)

    quant = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}

    def put(name: str, t: np.ndarray, matrix: bool) -> None:
        if matrix and a.dtype in quant:
            q = quant[a.dtype]
            out.add_tensor(name, gguf.quants.quantize(t.astype(np.float32), q), raw_dtype=q)
            return
        t = t.astype(np.float16 if (matrix and a.dtype == "f16") else np.float32)
        out.add_tensor(name, t)

    put("token_embd.weight", w["model.embed_tokens.weight"], True)
    put("output_norm.weight", w["model.norm.weight"], False)
    if "lm_head.weight" in w:
        put("output.weight", w["lm_head.weight"], True)
    hf = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(nl):
        for g, h in hf.items():
            put(f"blk.{i}.{g}.weight", w[f"model.layers.{i}.{h}.weight"], not g.endswith("norm"))
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()


if __name__ == "__main__":
    main()
