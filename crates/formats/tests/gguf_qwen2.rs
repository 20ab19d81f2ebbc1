//! GGUF files of architecture `qwen2` (Qwen2 / Qwen2.5: LLaMA with q/k/v biases). llama.cpp's
//! converter keeps their q/k rows in the Hugging Face order (NEOX RoPE), where it permutes
//! them for `llama`. tests/data/make_tiny_qwen2.py wrote one random model both ways; both must
//! load to the same weights, by the f32 loader and by the quantized one.

use formats::gguf::load_quant_model;
use formats::load_model;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(name)
}

#[test]
fn qwen2_and_llama_files_of_one_model_load_alike() {
    let qwen = load_model(&data("tiny-qwen2.gguf")).expect("qwen2 file");
    let llama = load_model(&data("tiny-qwen2-as-llama.gguf")).expect("llama file");
    let c = &qwen.params.config;
    assert!(c.qkv_bias && !c.tied_embeddings, "{c:?}");
    assert_eq!((c.n_heads, c.n_kv_heads, c.rope_theta), (4, 2, 1e6));
    assert_eq!(c, &llama.params.config);
    assert_eq!(qwen.params.data, llama.params.data, "f32 loader");
    // Not a vacuous pass: the two files hold the q rows in different orders.
    let q_bytes = |p: &PathBuf| {
        let h = formats::gguf::read_header(p).expect("header");
        let t = h.tensor("blk.0.attn_q.weight").expect("attn_q");
        let start = (h.data_offset + t.offset) as usize;
        std::fs::read(p).expect("read")[start..start + t.n_bytes as usize].to_vec()
    };
    assert_ne!(
        q_bytes(&data("tiny-qwen2.gguf")),
        q_bytes(&data("tiny-qwen2-as-llama.gguf"))
    );

    let qq = load_quant_model(&data("tiny-qwen2.gguf")).expect("qwen2 quantized");
    let ql = load_quant_model(&data("tiny-qwen2-as-llama.gguf")).expect("llama quantized");
    let (a, b) = (&qq.model.layers[0], &ql.model.layers[0]);
    for (x, y) in [
        (&a.wq, &b.wq),
        (&a.wk, &b.wk),
        (&a.wv, &b.wv),
        (&a.wo, &b.wo),
    ] {
        assert_eq!(x.to_f32(), y.to_f32(), "quantized loader: {x:?}");
    }
    assert_eq!(a.bq, b.bq);
    assert_eq!(a.bk, b.bk);
    // And the quantized loader's q rows are the f32 loader's.
    let wq = qwen
        .params
        .get("model.layers.0.self_attn.q_proj.weight")
        .expect("wq");
    assert_eq!(a.wq.to_f32(), wq);
}

#[test]
fn other_architectures_are_refused_by_name() {
    let mut bytes = std::fs::read(data("tiny-qwen2.gguf")).expect("read");
    let at = bytes
        .windows(5)
        .position(|w| w == b"qwen2")
        .expect("architecture value");
    bytes[at..at + 5].copy_from_slice(b"qwen3");
    let dir = std::env::temp_dir().join(format!("nf-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("qwen3.gguf");
    std::fs::write(&file, &bytes).expect("write");
    let e = match load_model(&file) {
        Ok(_) => panic!("qwen3 must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("general.architecture") && e.contains("qwen3") && e.contains("llama, qwen2"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
