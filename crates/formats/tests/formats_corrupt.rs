//! Broken files give an error that names the file and the field: never a panic, never a
//! huge allocation. Real files are mutated in their headers.

mod common;
use common::*;
use formats::gguf::{self, GgmlType, WriteOptions};
use formats::{load_model, TokenizerSource};
use std::path::Path;

/// Writes `bytes` to `dir/name` and returns the error loading it gives.
fn load_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let e = load_model(&p)
        .err()
        .unwrap_or_else(|| panic!("{name} loaded"));
    let msg = e.to_string();
    assert!(msg.contains(name), "error does not name the file: {msg}");
    msg
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

/// Where a GGUF string `s` (u64 length + bytes) ends.
fn after_str(b: &[u8], s: &str) -> usize {
    let mut pat = (s.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(s.as_bytes());
    find(b, &pat) + pat.len()
}

fn tiny_gguf(shared: &Path) -> Vec<u8> {
    let m = load_model(&shared.join("fixtures/tiny-llama/model")).unwrap();
    let tok = TokenizerSource::Gguf {
        model: "llama".into(),
        pre: None,
        tokens: (0..512).map(|i| format!("t{i}")).collect(),
        scores: Some(vec![0.0; 512]),
        token_types: Some(vec![1; 512]),
        merges: None,
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        pad: None,
        add_bos: Some(true),
        add_eos: None,
    };
    let p = tmp("tiny-gguf").join("t.gguf");
    gguf::write(
        &p,
        &m.params,
        &WriteOptions {
            dtype: GgmlType::Q8_0,
            tokenizer: Some(&tok),
            chat_template: Some("{{x}}"),
            name: None,
        },
    )
    .unwrap();
    std::fs::read(&p).unwrap()
}

#[test]
fn corrupt_gguf_headers() {
    let Some(shared) = shared() else { return };
    let good = tiny_gguf(&shared);
    let dir = tmp("corrupt-gguf");
    let set = |off: usize, val: &[u8]| {
        let mut b = good.clone();
        b[off..off + val.len()].copy_from_slice(val);
        b
    };
    assert!(load_err(&dir, "magic.gguf", &set(0, b"GGUX")).contains("magic"));
    assert!(load_err(&dir, "version.gguf", &set(4, &1u32.to_le_bytes())).contains("version"));
    assert!(
        load_err(&dir, "ntensors.gguf", &set(8, &u64::MAX.to_le_bytes())).contains("tensor_count")
    );
    assert!(
        load_err(&dir, "nkv.gguf", &set(16, &(1u64 << 40).to_le_bytes()))
            .contains("metadata_kv_count")
    );
    assert!(
        load_err(&dir, "keylen.gguf", &set(24, &(u64::MAX - 3).to_le_bytes()))
            .contains("metadata key #0")
    );
    // Tensor info of token_embd.weight: n_dims u32, dims u64 x2, type u32, offset u64.
    let ti = after_str(&good, "token_embd.weight");
    assert!(load_err(&dir, "ndims.gguf", &set(ti, &9u32.to_le_bytes())).contains("dimensions"));
    let e = load_err(&dir, "dim.gguf", &set(ti + 4, &(1u64 << 62).to_le_bytes()));
    assert!(e.contains("token_embd.weight"), "{e}");
    let e = load_err(&dir, "qtype.gguf", &set(ti + 20, &99u32.to_le_bytes()));
    assert!(
        e.contains("token_embd.weight type") && e.contains("99"),
        "{e}"
    );
    let e = load_err(
        &dir,
        "offset.gguf",
        &set(ti + 24, &(1u64 << 50).to_le_bytes()),
    );
    assert!(e.contains("token_embd.weight offset"), "{e}");
    let e = load_err(&dir, "misaligned.gguf", &set(ti + 24, &3u64.to_le_bytes()));
    assert!(e.contains("alignment"), "{e}");
    // A vocabulary that disagrees with the embedding.
    let vs = after_str(&good, "llama.vocab_size");
    let e = load_err(&dir, "vocab.gguf", &set(vs + 4, &511u32.to_le_bytes()));
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("511"),
        "{e}"
    );
    // An embedding dimension the tensors do not have: caught before allocating.
    let el = after_str(&good, "llama.embedding_length");
    let e = load_err(&dir, "embd.gguf", &set(el + 4, &4096u32.to_le_bytes()));
    assert!(
        e.contains("dims") || e.contains("llama.rope.dimension_count"),
        "{e}"
    );
    // A token array claiming more entries than the file holds.
    let tk = after_str(&good, "tokenizer.ggml.tokens");
    let e = load_err(
        &dir,
        "tokens.gguf",
        &set(tk + 8, &(1u64 << 40).to_le_bytes()),
    );
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("does not fit"),
        "{e}"
    );
    // Unknown metadata value type.
    let e = load_err(&dir, "vtype.gguf", &set(tk, &77u32.to_le_bytes()));
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("unknown value type"),
        "{e}"
    );
    // Wrong architecture.
    let ar = after_str(&good, "general.architecture");
    let e = load_err(&dir, "arch.gguf", &set(ar + 12, b"gemma"));
    assert!(e.contains("general.architecture"), "{e}");
    // Every truncation point in the header and some in the data.
    let header_end = after_str(&good, "output_norm.weight") + 40;
    for cut in (0..header_end)
        .step_by(7)
        .chain((header_end..good.len()).step_by(9973))
    {
        let e = gguf::parse_model(Path::new("cut.gguf"), &good[..cut])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cut.gguf"), "cut at {cut}: {e}");
    }
}

#[test]
fn truncated_real_gguf() {
    let Some(shared) = shared() else { return };
    let path = shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    use std::io::Read;
    let mut head = vec![0u8; 3 << 20];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let dir = tmp("corrupt-smol");
    let e = load_err(&dir, "smol-head.gguf", &head);
    assert!(
        e.contains("token_embd.weight") && e.contains("truncated"),
        "{e}"
    );
    // The header alone still describes the model (what `info` reads).
    let h = gguf::parse_header(Path::new("x"), &head);
    assert!(h.is_err());
}

fn copy_folder(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn hf_err(dir: &Path) -> String {
    load_model(dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("{} loaded", dir.display()))
}

#[test]
fn corrupt_hf_folders() {
    let Some(shared) = shared() else { return };
    let src = shared.join("fixtures/tiny-llama/model");
    let root = tmp("corrupt-hf");
    let fresh = |name: &str| {
        let d = root.join(name);
        copy_folder(&src, &d);
        d
    };
    let cfg_text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let d = fresh("json");
    std::fs::write(d.join("config.json"), &cfg_text[..cfg_text.len() / 2]).unwrap();
    let e = hf_err(&d);
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
    // vocab in config.json disagrees with the embedding
    let d = fresh("vocab");
    std::fs::write(
        d.join("config.json"),
        cfg_text.replace("\"vocab_size\": 512", "\"vocab_size\": 1024"),
    )
    .unwrap();
    let e = hf_err(&d);
    assert!(
        e.contains("model.safetensors")
            && e.contains("model.embed_tokens.weight")
            && e.contains("shape"),
        "{e}"
    );
    let d = fresh("heads");
    std::fs::write(
        d.join("config.json"),
        cfg_text.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
    )
    .unwrap();
    let e = hf_err(&d);
    assert!(e.contains("config.json") && e.contains("n_kv_heads"), "{e}");
    let d = fresh("huge");
    std::fs::write(
        d.join("config.json"),
        cfg_text.replace("\"hidden_size\": 64", "\"hidden_size\": 60000"),
    )
    .unwrap();
    let e = hf_err(&d);
    assert!(e.contains("hidden_size") || e.contains("head_dim"), "{e}");
    // safetensors: header length absurd, truncated data, header JSON broken
    let st = std::fs::read(src.join("model.safetensors")).unwrap();
    for (name, bytes) in [
        ("hdrlen", {
            let mut b = st.clone();
            b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            b
        }),
        ("trunc", st[..st.len() - 100].to_vec()),
        ("json", {
            let mut b = st.clone();
            b[8] = b'[';
            b
        }),
        ("tiny", st[..5].to_vec()),
    ] {
        let d = fresh(name);
        std::fs::write(d.join("model.safetensors"), bytes).unwrap();
        let e = hf_err(&d);
        assert!(
            e.contains("model.safetensors") && e.contains("header"),
            "{name}: {e}"
        );
    }
    // A shard name that climbs out of the folder.
    let d = fresh("index");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(
        d.join("model.safetensors.index.json"),
        r#"{"weight_map":{"lm_head.weight":"../../etc/passwd"}}"#,
    )
    .unwrap();
    let e = hf_err(&d);
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("weight_map.lm_head.weight"),
        "{e}"
    );
    // No weights at all.
    let d = fresh("noweights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert!(hf_err(&d).contains("model.safetensors"));
}

#[test]
fn corrupt_llama2c_files() {
    let Some(shared) = shared() else { return };
    let good = std::fs::read(shared.join("data/stories260K/stories260K.bin")).unwrap();
    let dir = tmp("corrupt-l2c");
    let set = |off: usize, v: i32| {
        let mut b = good.clone();
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        b
    };
    assert!(load_err(&dir, "trunc.bin", &good[..good.len() - 4]).contains("file size"));
    assert!(load_err(&dir, "short.bin", &good[..20]).contains("header"));
    assert!(load_err(&dir, "dim.bin", &set(0, -5)).contains("dim"));
    assert!(load_err(&dir, "layers.bin", &set(8, 1 << 30)).contains("n_layers"));
    assert!(load_err(&dir, "seq.bin", &set(24, 1 << 20)).contains("file size"));
    // A thousand layers claimed by a 1 MB file: refused by arithmetic, at once (cargo-fuzz
    // found the per-tensor walk slow before that check existed).
    let t = std::time::Instant::now();
    assert!(load_err(&dir, "deep.bin", &set(8, 1024)).contains("file size"));
    assert!(t.elapsed().as_millis() < 500);
    let e = load_err(&dir, "kv.bin", &set(16, 3));
    assert!(e.contains("n_kv_heads"), "{e}");
    // tokenizer.bin with fewer tokens than the model's vocabulary
    let tok = std::fs::read(shared.join("data/stories260K/tok512.bin")).unwrap();
    let p = dir.join("tok512.bin");
    std::fs::write(&p, &tok[..tok.len() / 2]).unwrap();
    let e = formats::llama2c::read_tokenizer(&p, Some(512))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tok512.bin") && e.contains("token"), "{e}");
}
