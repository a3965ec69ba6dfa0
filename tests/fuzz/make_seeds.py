"""Writes the tiny base checkpoints the fuzz targets mutate (committed; a few KB each).

    python tests/fuzz/make_seeds.py

Small seeds keep libFuzzer's inputs short, so mutations land on headers, pickle opcodes and
offsets rather than on float data. Needs torch and safetensors (generation only).
"""
import json
import pathlib

import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent / "seeds"
V, E, I, H, G, D = 16, 8, 16, 2, 1, 4  # vocab, embd, intermediate, heads, kv groups, head size

torch.manual_seed(0)


def r(*shape):
    return (torch.randn(*shape) * 0.1).contiguous()


hf = {
    "model.embed_tokens.weight": r(V, E),
    "model.layers.0.input_layernorm.weight": torch.ones(E),
    "model.layers.0.self_attn.q_proj.weight": r(H * D, E),
    "model.layers.0.self_attn.k_proj.weight": r(G * D, E),
    "model.layers.0.self_attn.v_proj.weight": r(G * D, E),
    "model.layers.0.self_attn.o_proj.weight": r(E, H * D),
    "model.layers.0.post_attention_layernorm.weight": torch.ones(E),
    "model.layers.0.mlp.gate_proj.weight": r(I, E),
    "model.layers.0.mlp.up_proj.weight": r(I, E),
    "model.layers.0.mlp.down_proj.weight": r(E, I),
    "model.norm.weight": torch.ones(E),
    "lm_head.weight": r(V, E),
}
d = HERE / "tiny-hf"
d.mkdir(parents=True, exist_ok=True)
save_file(hf, d / "model.safetensors", metadata={"format": "pt"})
(d / "config.json").write_text(json.dumps({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": E,
    "intermediate_size": I, "num_attention_heads": H, "num_key_value_heads": G,
    "num_hidden_layers": 1, "vocab_size": V, "max_position_embeddings": 32,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "hidden_act": "silu", "head_dim": D,
}, indent=1))

lit = {
    "transformer.wte.weight": hf["model.embed_tokens.weight"],
    "transformer.h.0.norm_1.weight": torch.ones(E),
    "transformer.h.0.attn.qkv.weight": torch.cat([
        hf["model.layers.0.self_attn.q_proj.weight"],
        hf["model.layers.0.self_attn.k_proj.weight"],
        hf["model.layers.0.self_attn.v_proj.weight"]]),
    "transformer.h.0.attn.proj.weight": hf["model.layers.0.self_attn.o_proj.weight"],
    "transformer.h.0.norm_2.weight": torch.ones(E),
    "transformer.h.0.mlp.fc_1.weight": hf["model.layers.0.mlp.gate_proj.weight"],
    "transformer.h.0.mlp.fc_2.weight": hf["model.layers.0.mlp.up_proj.weight"],
    "transformer.h.0.mlp.proj.weight": hf["model.layers.0.mlp.down_proj.weight"],
    "transformer.ln_f.weight": torch.ones(E),
    "lm_head.weight": hf["lm_head.weight"],
}
d = HERE / "tiny-lit"
d.mkdir(parents=True, exist_ok=True)
torch.save(lit, d / "lit_model.pth")
(d / "model_config.yaml").write_text(f"""name: tiny-fuzz
block_size: 32
vocab_size: {V}
padded_vocab_size: {V}
padding_multiple: 16
n_layer: 1
n_head: {H}
n_query_groups: {G}
head_size: {D}
n_embd: {E}
rotary_percentage: 1.0
parallel_residual: false
bias: false
norm_class_name: RMSNorm
norm_eps: 1.0e-05
mlp_class_name: LLaMAMLP
intermediate_size: {I}
rope_base: 10000
""")
print("seeds written to", HERE)
