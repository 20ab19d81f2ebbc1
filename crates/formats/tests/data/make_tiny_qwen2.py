# The source of tiny-qwen2.gguf and tiny-qwen2-as-llama.gguf: one random one-layer model with
# q/k/v biases (Hugging Face row order), written by gguf-py twice, as llama.cpp's converter
# (convert_hf_to_gguf.py) writes each architecture: `qwen2` keeps the rows as they are (NEOX
# RoPE); `llama` permutes the q/k rows and biases into the interleaved order. Matrices Q8_0.
#
#   GGUF_PY=$LL/gguf-py python3 make_tiny_qwen2.py OUT_DIR
import os, sys, numpy as np
sys.path.insert(0, os.environ["GGUF_PY"])  # llama.cpp's gguf-py folder
import gguf
from gguf.quants import quantize

dim, hidden, heads, kv, vocab = 64, 128, 4, 2, 32
hd = dim // heads
rng = np.random.default_rng(5)
r = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)
w = {
    "token_embd.weight": r(vocab, dim),
    "output_norm.weight": 1 + r(dim),
    "output.weight": r(vocab, dim),
    "blk.0.attn_norm.weight": 1 + r(dim),
    "blk.0.ffn_norm.weight": 1 + r(dim),
    "blk.0.attn_q.weight": r(dim, dim),
    "blk.0.attn_q.bias": r(dim),
    "blk.0.attn_k.weight": r(kv * hd, dim),
    "blk.0.attn_k.bias": r(kv * hd),
    "blk.0.attn_v.weight": r(kv * hd, dim),
    "blk.0.attn_v.bias": r(kv * hd),
    "blk.0.attn_output.weight": r(dim, dim),
    "blk.0.ffn_gate.weight": r(hidden, dim),
    "blk.0.ffn_up.weight": r(hidden, dim),
    "blk.0.ffn_down.weight": r(dim, hidden),
}


def permute(x, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def write(path, arch):
    g = gguf.GGUFWriter(path, arch)
    g.add_name("tiny-" + arch)
    g.add_context_length(64); g.add_embedding_length(dim); g.add_block_count(1)
    g.add_feed_forward_length(hidden); g.add_head_count(heads); g.add_head_count_kv(kv)
    g.add_layer_norm_rms_eps(1e-6); g.add_rope_freq_base(1000000.0)
    g.add_file_type(7)
    g.add_tokenizer_model("llama")
    g.add_token_list([f"<t{i}>" for i in range(vocab)])
    g.add_token_scores([0.0] * vocab)
    g.add_token_types([1] * vocab)
    for name, x in w.items():
        if arch == "llama" and ".attn_q." in name:
            x = permute(x, heads)
        if arch == "llama" and ".attn_k." in name:
            x = permute(x, kv)
        if x.ndim == 2:
            q = quantize(x, gguf.GGMLQuantizationType.Q8_0)
            g.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            g.add_tensor(name, x)
    g.write_header_to_file(); g.write_kv_data_to_file(); g.write_tensors_to_file(); g.close()


out = sys.argv[1]
write(os.path.join(out, "tiny-qwen2.gguf"), "qwen2")
write(os.path.join(out, "tiny-qwen2-as-llama.gguf"), "llama")
