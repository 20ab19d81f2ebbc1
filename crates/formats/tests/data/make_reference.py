"""How the reference numbers in this folder were made (run once by hand; tests never run it).

Needs: pip install numpy gguf==0.19.0
  quant_blocks_gguf_py.json          random blocks of each ggml type (f16 scale fields set to
                                     small sane values) and their dequantization by gguf-py
  smollm2_q4_1_tensors_gguf_py.json  sums and sample values of a few SmolLM2 tensors, q/k rows
                                     converted to the Hugging Face (rotate-half) order
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize


def quant_blocks(out_path):
    rng = np.random.default_rng(7)
    spec = {"Q4_0": (Q.Q4_0, 18, [0]), "Q4_1": (Q.Q4_1, 20, [0, 2]), "Q5_0": (Q.Q5_0, 22, [0]),
            "Q5_1": (Q.Q5_1, 24, [0, 2]), "Q8_0": (Q.Q8_0, 34, [0]), "Q4_K": (Q.Q4_K, 144, [0, 2]),
            "Q5_K": (Q.Q5_K, 176, [0, 2]), "Q6_K": (Q.Q6_K, 210, [208]), "F16": (Q.F16, 2, []),
            "BF16": (Q.BF16, 2, [])}
    out = {}
    for name, (qt, bb, foffs) in spec.items():
        nblocks = 3 if bb > 2 else 64
        raw = bytearray(rng.integers(0, 256, size=bb * nblocks, dtype=np.uint8).tobytes())
        if name == "F16":
            raw = bytearray(rng.standard_normal(nblocks).astype(np.float16).tobytes())
        if name == "BF16":
            v = rng.standard_normal(nblocks).astype(np.float32).view(np.uint32) >> 16
            raw = bytearray(v.astype(np.uint16).tobytes())
        for b in range(nblocks):
            for fo in foffs:
                raw[b * bb + fo:b * bb + fo + 2] = np.float16(rng.uniform(-0.05, 0.05)).tobytes()
        arr = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(1, -1)
        deq = np.array(dequantize(arr, qt), dtype=np.float32).reshape(-1)
        out[name] = {"hex": bytes(raw).hex(), "expected": [float(x) for x in deq]}
    json.dump(out, open(out_path, "w"))


def smollm2(gguf_path, out_path):
    r = GGUFReader(gguf_path)
    tensors = {t.name: t for t in r.tensors}

    def deq(name):
        t = tensors[name]
        a = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)
        return a.reshape([int(x) for x in reversed(t.shape)]) if len(t.shape) > 1 else a.reshape(-1)

    def to_rotate_half(w, heads):
        rows, cols = w.shape
        return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)

    spec = [("token_embd.weight", "model.embed_tokens.weight", None),
            ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", 9),
            ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", 3),
            ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight", None),
            ("blk.7.attn_norm.weight", "model.layers.7.input_layernorm.weight", None),
            ("output_norm.weight", "model.norm.weight", None)]
    out = {}
    for g, hf, heads in spec:
        w = deq(g)
        if heads:
            w = to_rotate_half(w, heads)
        flat = np.ascontiguousarray(w).reshape(-1)
        n = flat.size
        idx = sorted(set(i % n for i in [0, 1, 37, 64, 577, 1000, n // 2 + 3, n - 1, 32 * 576 + 5]))
        out[hf] = {"sum": float(flat.astype(np.float64).sum()),
                   "abs_sum": float(np.abs(flat.astype(np.float64)).sum()),
                   "at": [[i, float(flat[i])] for i in idx]}
    json.dump(out, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    quant_blocks("quant_blocks_gguf_py.json")
    smollm2(sys.argv[1], "smollm2_q4_1_tensors_gguf_py.json")
