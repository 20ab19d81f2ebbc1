# The source of tiny-q2k-q3k.gguf: a random one-layer LLaMA (dim 256, so K-quant blocks fit
# every matrix) written as F32 by gguf-py, then quantized by llama.cpp's own quantizer
# (llama-cpp-python 0.3.36 sdist, vendor/llama.cpp), Q3_K with three matrices in Q2_K:
#
#   GGUF_PY=$LL/gguf-py python3 make_tiny_q2k_q3k.py tiny-f32.gguf
#   $LL/build/bin/llama-quantize --pure --tensor-type attn_q=q2_k --tensor-type ffn_up=q2_k \
#       --tensor-type attn_v=q2_k tiny-f32.gguf tiny-q2k-q3k.gguf Q3_K_S 1
#
# The per-tensor sums in tests/gguf_read_only_types.rs are gguf-py's dequantization of it.
import os, sys, numpy as np
sys.path.insert(0, os.environ["GGUF_PY"])  # llama.cpp's gguf-py folder
import gguf
dim, hidden, heads, kv, vocab = 256, 256, 4, 2, 32
hd = dim // heads
rng = np.random.default_rng(11)
w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_name("tiny-k256")
w.add_context_length(64); w.add_embedding_length(dim); w.add_block_count(1)
w.add_feed_forward_length(hidden); w.add_head_count(heads); w.add_head_count_kv(kv)
w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(10000.0); w.add_rope_dimension_count(hd)
w.add_vocab_size(vocab); w.add_file_type(0)
w.add_tokenizer_model("llama")
w.add_token_list([f"<t{i}>" for i in range(vocab)])
w.add_token_scores([0.0] * vocab)
w.add_token_types([1] * vocab)
def t(name, rows, cols):
    w.add_tensor(name, (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32))
t("token_embd.weight", vocab, dim)
w.add_tensor("output_norm.weight", np.ones(dim, np.float32))
w.add_tensor("blk.0.attn_norm.weight", np.ones(dim, np.float32))
w.add_tensor("blk.0.ffn_norm.weight", np.ones(dim, np.float32))
t("blk.0.attn_q.weight", dim, dim); t("blk.0.attn_k.weight", kv * hd, dim)
t("blk.0.attn_v.weight", kv * hd, dim); t("blk.0.attn_output.weight", dim, dim)
t("blk.0.ffn_gate.weight", hidden, dim); t("blk.0.ffn_up.weight", hidden, dim)
t("blk.0.ffn_down.weight", dim, hidden)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
