#!/usr/bin/env python3
"""Build the small bundled demo model for graftlm (examples/demo/model/).

Everything is made from text that ships with Python itself: the documentation
topics in `pydoc_data.topics` (the text behind `help("topics")`, part of the
CPython documentation, PSF Documentation licence). No network access is needed.

Steps:
  1. corpus: one document per pydoc topic, separated by <|endoftext|>;
  2. tokenizer: byte-level BPE (vocab 1024, <|endoftext|> = id 0) with the
     `tokenizers` library -> tokenizer.json, tokenizer_config.json,
     generation_config.json;
  3. model: a tiny Llama-style `litgpt.model.GPT` (4 layers, 128 wide, GQA 4/2,
     RMSNorm, SwiGLU, RoPE) trained from scratch with a plain torch loop;
  4. save in LitGPT's checkpoint layout: lit_model.pth (plain float32 state
     dict), model_config.yaml (written by `litgpt.utils.save_config`),
     prompt_style.yaml;
  5. check with LitGPT itself: reload, greedy-generate from a fixed prompt with
     `litgpt.generate.base.generate`, write examples/demo/reference.json.

Deterministic: fixed seeds, one CPU thread. Run from the repository root:

    python3 examples/demo/train_demo.py

(about 10 minutes on one CPU core). `--steps` / `--batch-size` change the budget.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# One thread everywhere (torch, the tokenizers trainer's rayon pool, BLAS).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402
from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

import litgpt  # noqa: E402
from litgpt import Config  # noqa: E402
from litgpt.generate.base import generate  # noqa: E402
from litgpt.model import GPT  # noqa: E402

HERE = Path(__file__).resolve().parent
EOS = "<|endoftext|>"
VOCAB_SIZE = 1024
SEED = 1234
PROMPT = "The Python interpreter"
MAX_NEW_TOKENS = 40

MODEL_CONFIG = dict(
    name="graftlm-demo",
    block_size=256,
    n_layer=4,
    n_embd=128,
    n_head=4,
    n_query_groups=2,
    head_size=32,
    rotary_percentage=1.0,
    parallel_residual=False,
    bias=False,
    norm_class_name="RMSNorm",
    norm_eps=1e-5,
    mlp_class_name="LLaMAMLP",
    intermediate_size=352,
    padding_multiple=64,
    rope_base=10000,
)


# --------------------------------------------------------------------------- corpus
def load_documents() -> list[str]:
    """The pydoc topics, one document each, in sorted key order (stable across runs)."""
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        text = topics[key].replace("\r\n", "\n").strip()
        if text:
            docs.append(text + "\n")
    return docs


# --------------------------------------------------------------------------- tokenizer
def train_tokenizer(docs: list[str]) -> HFTokenizer:
    tok = HFTokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS],  # -> id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any UTF-8 round-trips
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    assert tok.token_to_id(EOS) == 0
    return tok


def write_tokenizer_files(tok: HFTokenizer, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"))
    with open(out / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(
            {"bos_token": None, "eos_token": EOS, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2
        )
        f.write("\n")
    with open(out / "generation_config.json", "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": tok.token_to_id(EOS)}, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------- model
def init_weights(model: GPT, config: Config) -> None:
    """GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 n_layer)."""
    g = torch.Generator().manual_seed(SEED)
    for name, p in sorted(model.named_parameters()):
        if p.dim() == 1:  # RMSNorm weights
            torch.nn.init.ones_(p)
            continue
        std = 0.02
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            std = 0.02 / math.sqrt(2 * config.n_layer)
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def lr_at(step: int, total: int, peak: float, warmup: int, floor_frac: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: GPT, data: torch.Tensor, T: int, batch_size: int) -> float:
    """Mean next-token loss over non-overlapping T-token windows covering all of `data`."""
    model.eval()
    n = (data.numel() - 1) // T
    starts = torch.arange(n) * T
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        s = starts[i : i + batch_size]
        x = torch.stack([data[j : j + T] for j in s])
        y = torch.stack([data[j + 1 : j + T + 1] for j in s])
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        total += loss.item()
        count += y.numel()
    model.train()
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=8, help="256-token windows per step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--out", type=Path, default=HERE / "model")
    ap.add_argument("--reference", type=Path, default=HERE / "reference.json")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    random.seed(SEED)
    torch.use_deterministic_algorithms(True)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    print(f"torch {torch.__version__}, litgpt {version('litgpt')}, tokenizers {version('tokenizers')}", flush=True)

    # 1. corpus
    docs = load_documents()
    print(f"corpus: {len(docs)} pydoc topics, {sum(len(d) for d in docs):,} characters", flush=True)

    # 2. tokenizer
    tok = train_tokenizer(docs)
    write_tokenizer_files(tok, out)
    vocab_size = tok.get_vocab_size()
    eos_id = tok.token_to_id(EOS)
    sample = "Ünïcødé ✓ \t\n  def f(x): return x ** 2  # 日本語"
    assert tok.decode(tok.encode(sample).ids) == sample, "byte-level round trip failed"
    print(f"tokenizer: vocab {vocab_size}, eos id {eos_id}", flush=True)

    # split: documents in a fixed shuffled order, separated by <|endoftext|>; the last 5% of that
    # token stream is held out for validation (there are only 79 documents, of very unequal size).
    encoded = [tok.encode(d).ids for d in docs]
    order = list(range(len(docs)))
    random.Random(SEED).shuffle(order)
    stream: list[int] = []
    for i in order:
        stream.extend(encoded[i] + [eos_id])
    n_tokens = len(stream)
    n_val = int(0.05 * n_tokens)
    train_ids, val_ids = stream[: n_tokens - n_val], stream[n_tokens - n_val :]
    train = torch.tensor(train_ids, dtype=torch.long)
    val = torch.tensor(val_ids, dtype=torch.long)
    print(f"tokens: {n_tokens:,} total, train {train.numel():,}, val {val.numel():,}", flush=True)

    # 3. model
    config = Config(vocab_size=vocab_size, **MODEL_CONFIG)
    model = GPT(config)
    init_weights(model, config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters, padded vocab {config.padded_vocab_size}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    T, B = config.block_size, args.batch_size
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    t0 = time.perf_counter()
    running = None
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, train.numel() - T - 1, (B,), generator=gen)
        x = torch.stack([train[s : s + T] for s in starts])
        y = torch.stack([train[s + 1 : s + T + 1] for s in starts])
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.perf_counter() - t0
            vl = evaluate(model, val, T, 16) if step % (4 * args.log_every) == 0 or step == args.steps - 1 else None
            vs = f"  val {vl:.4f}" if vl is not None else ""
            print(f"step {step:5d}  loss {loss.item():.4f}  (smoothed {running:.4f}){vs}  lr {lr:.2e}  {el:6.1f}s", flush=True)

    train_loss = evaluate(model, train, T, 16)
    val_loss = evaluate(model, val, T, 16)
    print(f"final: train loss {train_loss:.4f}, val loss {val_loss:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    # 4. save in LitGPT layout
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / "lit_model.pth")
    litgpt.utils.save_config(config, out)
    with open(out / "prompt_style.yaml", "w", encoding="utf-8") as f:
        yaml.dump({"class_path": "litgpt.prompts.Default"}, f)

    # 5. verify with LitGPT itself, the way `litgpt generate` sets up (generate/base.py main()).
    reference = litgpt_greedy(out, PROMPT, MAX_NEW_TOKENS)
    reference["train_loss"] = round(train_loss, 4)
    reference["val_loss"] = round(val_loss, 4)
    with open(args.reference, "w", encoding="utf-8") as f:
        json.dump(reference, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("greedy:", repr(PROMPT + reference["greedy_text"]))
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB) and {args.reference}")


def litgpt_greedy(checkpoint_dir: Path, prompt: str, max_new_tokens: int) -> dict:
    from litgpt import Tokenizer
    from litgpt.prompts import load_prompt_style

    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    tokenizer = Tokenizer(checkpoint_dir)
    prompt_style = load_prompt_style(checkpoint_dir)
    text = prompt_style.apply(prompt)
    assert text == prompt, "Default prompt style must leave the prompt unchanged"
    encoded = tokenizer.encode(text)
    prompt_length = encoded.size(0)
    max_returned_tokens = prompt_length + max_new_tokens

    model = GPT(config)
    model.max_seq_length = max_returned_tokens
    model.set_kv_cache(batch_size=1)
    model.eval()
    state = torch.load(checkpoint_dir / "lit_model.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)

    torch.manual_seed(SEED)
    with torch.inference_mode():
        y = generate(model, encoded, max_returned_tokens, temperature=0.0, top_k=None, eos_id=tokenizer.eos_id)
    new_ids = y[prompt_length:].tolist()
    # text as it appears appended to the prompt
    full = tokenizer.decode(y)
    greedy_text = full[len(prompt):] if full.startswith(prompt) else tokenizer.decode(torch.tensor(new_ids))
    return {
        "prompt": prompt,
        "prompt_ids": encoded.tolist(),
        "greedy_new_ids": new_ids,
        "greedy_text": greedy_text,
        "max_new_tokens": max_new_tokens,
        "eos_id": tokenizer.eos_id,
    }


if __name__ == "__main__":
    sys.exit(main())
