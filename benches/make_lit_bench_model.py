#!/usr/bin/env python3
"""LitGPT-layout copies of a bench checkpoint, for load figures on LitGPT's own files (not
committed: ~860 MB).

    python3 benches/make_lit_bench_model.py OUT_DIR [--shape smollm2-135m]

Needs OUT_DIR/<shape>/ from `benches/make_bench_model.py` and `litgpt` (0.5.x). Writes
OUT_DIR/<shape>-lit/ (LitGPT's `convert_hf_checkpoint` of it: `lit_model.pth` f32, with a tied
head saved as a view of the embedding's storage, as LitGPT writes it), OUT_DIR/<shape>-lit-bf16/
(the same tensors in bf16, each saved on its own) and OUT_DIR/<shape>-lit-lora/step-000100/
(`lit_model.pth.lora` + `hyperparameters.yaml`: a LitGPT LoRA, r 16, alpha 32, on q/k/v, the
projection and the MLP, random non-zero factors). Then, for example:

    GRAFTLM_BENCH_CHECKPOINT=OUT_DIR/smollm2-135m-lit \\
    GRAFTLM_BENCH_ADAPTER=OUT_DIR/smollm2-135m-lit-lora/step-000100 \\
    cargo bench --profile dev --bench decode
"""
import argparse
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from litgpt.lora import GPT, Config, lora_filter
from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

# LitGPT config names for the bench shapes (the name picks LitGPT's weight map and config).
NAMES = {"smollm2-135m": "SmolLM2-135M", "tinyllama-1.1b": "tiny-llama-1.1b"}
LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.0, lora_query=True, lora_key=True, lora_value=True,
            lora_projection=True, lora_mlp=True, lora_head=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(NAMES))
    args = ap.parse_args()
    hf = args.out / args.shape
    lit, lit16 = args.out / f"{args.shape}-lit", args.out / f"{args.shape}-lit-bf16"
    step = args.out / f"{args.shape}-lit-lora" / "step-000100"
    if not (hf / "model.safetensors").is_file():
        raise SystemExit(f"{hf} is missing: run benches/make_bench_model.py first")
    if not (lit / "lit_model.pth").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / NAMES[args.shape]
            shutil.copytree(hf, work)
            convert_hf_checkpoint(work, model_name=NAMES[args.shape])
            lit.mkdir(parents=True, exist_ok=True)
            for f in work.iterdir():
                if f.suffix in (".pth", ".yaml", ".json"):
                    shutil.copy(f, lit / f.name)
    if not (lit16 / "lit_model.pth").is_file():
        lit16.mkdir(parents=True, exist_ok=True)
        sd = torch.load(lit / "lit_model.pth", weights_only=True)
        torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, lit16 / "lit_model.pth")
        for f in lit.iterdir():
            if f.name != "lit_model.pth":
                shutil.copy(f, lit16 / f.name)
    if not (step / "lit_model.pth.lora").is_file():
        step.mkdir(parents=True, exist_ok=True)
        cfg = Config.from_file(lit / "model_config.yaml", **LORA)
        with torch.device("meta"):
            model = GPT(cfg)
        g = torch.Generator().manual_seed(0)
        sd = {n: torch.randn(p.shape, generator=g) * 0.02 for n, p in model.named_parameters() if lora_filter(n, p)}
        torch.save({"model": sd}, step / "lit_model.pth.lora")
        hp = {"checkpoint_dir": str(lit.resolve()), "out_dir": str(step.parent.resolve()), "precision": "32-true", **LORA}
        (step / "hyperparameters.yaml").write_text(yaml.safe_dump(hp))
        shutil.copy(lit / "model_config.yaml", step / "model_config.yaml")
    print(f"wrote {lit}, {lit16} and {step}")


if __name__ == "__main__":
    main()
