#!/usr/bin/env python3
"""PyTorch's side of the training benchmark in docs/performance.md.

The same step `neuralforge bench --mode full` times: a LLaMA model of a preset shape
(`--impl plain`: a llama2.c-style module with SDPA attention, the faster of the two here;
`--impl transformers`: transformers' LlamaForCausalLM), forward + backward on random tokens,
gradient clipping to norm 1, AdamW (weight decay 0.1). `--precision bf16` runs the forward
and backward under CPU autocast to bfloat16 with f32 master weights (PyTorch's mixed
precision, what `train --precision bf16` does); f32 runs everything in f32.

Needs torch and transformers (a venv outside the repository), e.g.
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers
    /tmp/venv/bin/python tools/bench_torch_train.py --preset stories110m --precision bf16

Prints one JSON line: {"preset", "precision", "threads", "batch", "seq", "step_ms": [...],
"tokens_per_s"} (the median step).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

# dim, hidden, layers, heads, kv heads, vocab, tied (the presets of engine/src/config.rs).
PRESETS = {
    "stories15m": (288, 768, 6, 6, 6, 32000, False),
    "stories110m": (768, 2048, 12, 12, 12, 32000, False),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152, True),
}


class Block(nn.Module):
    def __init__(self, dim, hidden, heads, kv):
        super().__init__()
        self.heads, self.kv, self.hd = heads, kv, dim // heads
        self.n1, self.n2 = nn.RMSNorm(dim, eps=1e-5), nn.RMSNorm(dim, eps=1e-5)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, kv * self.hd, bias=False)
        self.v = nn.Linear(dim, kv * self.hd, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.kv, self.hd).transpose(1, 2)

        def rope(z):
            z1, z2 = z[..., : self.hd // 2], z[..., self.hd // 2 :]
            return z * cos + torch.cat((-z2, z1), dim=-1) * sin

        a = F.scaled_dot_product_attention(
            rope(q), rope(k), v, is_causal=True, enable_gqa=self.kv != self.heads
        )
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Plain(nn.Module):
    def __init__(self, dim, hidden, layers, heads, kv, vocab, tied, seq):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, hidden, heads, kv) for _ in range(layers))
        self.norm = nn.RMSNorm(dim, eps=1e-5)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tied:
            self.head.weight = self.emb.weight
        hd = dim // heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(seq).float(), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, x):
        h = self.emb(x)
        t = x.shape[1]
        for blk in self.blocks:
            h = blk(h, self.cos[:t], self.sin[:t])
        return self.head(self.norm(h))


def transformers_model(dim, hidden, layers, heads, kv, vocab, tied, seq):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=dim,
        intermediate_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        max_position_embeddings=max(1024, seq),
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        attn_implementation="sdpa",
    )
    m = LlamaForCausalLM(cfg)
    return lambda x: m(input_ids=x).logits, m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="stories110m", choices=sorted(PRESETS))
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--impl", default="plain", choices=["plain", "transformers"])
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    shape = PRESETS[a.preset]
    vocab = shape[5]
    if a.impl == "plain":
        model = Plain(*shape, a.seq_len)
        run = model
    else:
        run, model = transformers_model(*shape, a.seq_len)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
    tokens = torch.randint(0, vocab, (a.batch_size, a.seq_len + 1))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = run(x)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, vocab), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    print(json.dumps({
        "preset": a.preset, "precision": a.precision, "threads": a.threads,
        "batch": a.batch_size, "seq": a.seq_len, "impl": a.impl, "torch": torch.__version__,
        "step_ms": [round(t, 1) for t in times],
        "tokens_per_s": a.batch_size * a.seq_len / ms * 1e3,
    }))


if __name__ == "__main__":
    main()
