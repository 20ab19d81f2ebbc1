//! Real files in, every format out, and back: weights bitwise equal for f32 and the
//! engine's logits identical.

mod common;
use common::*;
use formats::gguf::{self, GgmlType, WriteOptions};
use formats::hf::{self, SaveOptions};
use formats::safetensors_io::DType;
use formats::{llama2c, load_model, ModelFormat, TokenizerSource};
use std::path::Path;

/// HF, GGUF F32 and llama2.c (when expressible) round trips of `m`, each bitwise.
fn round_trips(m: &formats::LoadedModel, dir: &Path, tokens: &[u32]) {
    let base = logits(&m.params, tokens);
    // Native folder.
    let hf_dir = dir.join("hf");
    hf::save_loaded(&hf_dir, m, DType::F32).unwrap();
    let back = load_model(&hf_dir).unwrap();
    assert_eq!(back.format, ModelFormat::Hf);
    assert_eq!(back.params.config, m.params.config);
    assert!(
        back.params.data == m.params.data,
        "HF round trip not bitwise"
    );
    assert_eq!(back.bos_token_id, m.bos_token_id);
    assert_eq!(back.eos_token_ids, m.eos_token_ids);
    assert_eq!(back.chat_template, m.chat_template);
    assert_eq!(logits(&back.params, tokens), base);
    // GGUF F32 (q/k rows permuted on the way out and back).
    let g = dir.join("m.gguf");
    let tok = match &m.tokenizer {
        Some(t @ TokenizerSource::Gguf { .. }) => Some(t),
        _ => None,
    };
    let opts = WriteOptions {
        dtype: GgmlType::F32,
        tokenizer: tok,
        chat_template: m.chat_template.as_deref(),
        name: None,
    };
    gguf::write(&g, &m.params, &opts).unwrap();
    let back = load_model(&g).unwrap();
    assert_eq!(back.params.config.vocab_size, m.params.config.vocab_size);
    assert!(
        back.params.data == m.params.data,
        "GGUF F32 round trip not bitwise"
    );
    assert_eq!(logits(&back.params, tokens), base);
    if tok.is_some() {
        assert_eq!(back.tokenizer.as_ref(), tok);
        assert_eq!(back.chat_template, m.chat_template);
    }
    // GGUF F16 and Q8_0: close, not equal.
    for (dt, tol) in [(GgmlType::F16, 2e-3), (GgmlType::Q8_0, 2e-2)] {
        gguf::write(
            &g,
            &m.params,
            &WriteOptions {
                dtype: dt,
                ..opts.clone()
            },
        )
        .unwrap();
        let back = load_model(&g).unwrap();
        let d = max_diff(&back.params.data, &m.params.data);
        assert!(d < tol, "{dt:?} max weight error {d}");
    }
    // llama2.c, where its fixed maths can express the model.
    let l = dir.join("m.bin");
    match llama2c::write_model(&l, &m.params) {
        Ok(()) => {
            let back = load_model(&l).unwrap();
            assert_eq!(back.params.config.max_seq_len, m.params.config.max_seq_len);
            assert!(
                back.params.data == m.params.data,
                "llama2.c round trip not bitwise"
            );
            assert_eq!(logits(&back.params, tokens), base);
        }
        Err(e) => {
            let c = &m.params.config;
            assert!(
                c.rope_theta != 10000.0 || (c.norm_eps - 1e-5).abs() > 1e-12,
                "{e}"
            );
            assert!(e.to_string().contains("m.bin"), "{e}");
        }
    }
}

#[test]
fn hf_fixtures_load_and_round_trip() {
    let Some(shared) = shared() else { return };
    for (name, kv, theta, tied) in [
        ("tiny-llama", 2, 10000.0, false),
        ("tiny-llama-tied", 4, 100000.0, true),
    ] {
        let dir = shared.join("fixtures").join(name).join("model");
        let m = load_model(&dir).unwrap();
        let c = &m.params.config;
        assert_eq!(
            (
                c.dim,
                c.hidden_dim,
                c.n_layers,
                c.n_heads,
                c.n_kv_heads,
                c.vocab_size
            ),
            (64, 176, 2, 4, kv, 512)
        );
        assert_eq!(c.rope_theta, theta);
        assert_eq!(c.tied_embeddings, tied);
        assert_eq!(m.params.get("lm_head.weight").is_some(), !tied);
        assert_eq!(m.bos_token_id, Some(1));
        assert_eq!(m.eos_token_ids, vec![2]);
        // The engine reproduces PyTorch's logits from the loaded weights.
        let fb = formats::safetensors_io::SafetensorsFile::open(
            &shared
                .join("fixtures")
                .join(name)
                .join("forward_backward.safetensors"),
        )
        .unwrap();
        let bt = formats::safetensors_io::SafetensorsFile::open(
            &shared.join("fixtures").join(name).join("batch.safetensors"),
        )
        .unwrap();
        let st = bt.parse().unwrap();
        let t = st.tensor("tokens").unwrap();
        let (b, t1) = (t.shape()[0], t.shape()[1]);
        let ids: Vec<u32> = t
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
            .collect();
        let inputs: Vec<u32> = (0..b)
            .flat_map(|i| ids[i * t1..i * t1 + t1 - 1].to_vec())
            .collect();
        let ours = engine::model::logits(&m.params, None, &inputs, b, t1 - 1).unwrap();
        let (_, want) = fb.read_any_f32("logits").unwrap();
        assert!(
            max_diff(&ours, &want) < 1e-4,
            "{name}: logits differ from PyTorch by {}",
            max_diff(&ours, &want)
        );
        round_trips(&m, &tmp(name), &inputs[..8]);
    }
}

#[test]
fn sharded_hf_folder_loads_like_the_single_file() {
    let Some(shared) = shared() else { return };
    let m = load_model(&shared.join("fixtures/tiny-llama/model")).unwrap();
    let dir = tmp("sharded");
    std::fs::copy(
        shared.join("fixtures/tiny-llama/model/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    // Two shards: layer 0 + embeddings in one (bf16), the rest in the other (f32).
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut map = serde_json::Map::new();
    for t in &m.params.layout.tensors {
        let first = t.name.contains("layers.0.") || t.name.contains("embed");
        let file = if first {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(t.name.clone(), serde_json::json!(file));
        (if first { &mut a } else { &mut b }).push((
            t.name.clone(),
            t.shape.clone(),
            &m.params.data[t.range()],
        ));
    }
    formats::safetensors_io::write(
        &dir.join("model-00001-of-00002.safetensors"),
        a,
        DType::BF16,
    )
    .unwrap();
    formats::safetensors_io::write(&dir.join("model-00002-of-00002.safetensors"), b, DType::F32)
        .unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let s = load_model(&dir).unwrap();
    assert!(
        s.source.contains("BF16") && s.source.contains("F32"),
        "{}",
        s.source
    );
    let d = max_diff(&s.params.data, &m.params.data);
    assert!(d > 0.0 && d < 1e-2, "{d}");
    assert_eq!(
        s.params.get("lm_head.weight"),
        m.params.get("lm_head.weight")
    );
}

#[test]
fn stories260k_loads_and_round_trips() {
    let Some(shared) = shared() else { return };
    let path = shared.join("data/stories260K/stories260K.bin");
    let m = load_model(&path).unwrap();
    let c = &m.params.config;
    assert_eq!(shape(c), [64, 172, 5, 8, 4, 512, 512]);
    assert!(c.tied_embeddings);
    assert_eq!(m.format, ModelFormat::Llama2c);
    assert_eq!(
        m.tokenizer,
        Some(TokenizerSource::Llama2cBin(
            shared.join("data/stories260K/tok512.bin")
        ))
    );
    let tok =
        llama2c::read_tokenizer(&shared.join("data/stories260K/tok512.bin"), Some(512)).unwrap();
    assert_eq!(tok.pieces[1], b"\n<s>\n");
    assert_eq!(tok.pieces.len(), 512);
    // The written legacy file equals the original in every weight byte (freq_cis aside).
    let ours = llama2c::model_bytes(&path, &m.params).unwrap();
    let orig = std::fs::read(&path).unwrap();
    assert_eq!(ours.len(), orig.len());
    let w_end = 28 + 4 * (m.params.data.len());
    assert_eq!(ours[..w_end], orig[..w_end]);
    // Greedy first tokens from BOS: the start of llama2.c's expected output.
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("data/stories260K/expected_greedy_t0_n200_ids.json"))
            .unwrap(),
    )
    .unwrap();
    let want: Vec<u32> = j["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let mut ids = vec![1u32];
    for _ in 0..12 {
        let l = logits(&m.params, &ids);
        let last = &l[(ids.len() - 1) * 512..];
        let next = (0..512)
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap() as u32;
        ids.push(next);
    }
    assert_eq!(ids[..], want[..13]);
    round_trips(&m, &tmp("stories"), &want[..10]);
}

#[test]
fn llama2_tokenizer_bin_reads() {
    let Some(shared) = shared() else { return };
    let t = llama2c::read_tokenizer(
        &shared.join("data/llama2_tokenizer/tokenizer.bin"),
        Some(32000),
    )
    .unwrap();
    assert_eq!(t.max_token_length, 27);
    assert_eq!(t.pieces[3], b"<0x00>");
    assert_eq!(t.pieces[2], b"\n</s>\n");
    let again =
        llama2c::parse_tokenizer(Path::new("x"), &llama2c::tokenizer_bytes(&t), None).unwrap();
    assert_eq!(again, t);
}

#[test]
fn peft_adapters_load_and_save() {
    let Some(shared) = shared() else { return };
    let base = load_model(&shared.join("fixtures/tiny-llama/model")).unwrap();
    for which in ["lora_init", "lora_after"] {
        let dir = shared.join("fixtures/tiny-llama").join(which);
        let a = formats::peft::load_adapter(&dir, &base.params.config).unwrap();
        assert_eq!(a.config.rank, 4);
        assert_eq!(a.config.alpha, 8.0);
        assert_eq!(a.config.targets.len(), 4);
        let out = tmp(which);
        formats::peft::save_adapter(&out, &a, Some("tiny-llama")).unwrap();
        let b = formats::peft::load_adapter(&out, &base.params.config).unwrap();
        assert!(a.data == b.data);
        assert_eq!(a.layout, b.layout);
    }
    // An adapter for another shape is refused, naming the file.
    let tied = load_model(&shared.join("fixtures/tiny-llama-tied/model")).unwrap();
    let e = formats::peft::load_adapter(
        &shared.join("fixtures/tiny-llama/lora_init"),
        &tied.params.config,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("k_proj"),
        "{e}"
    );
}

#[test]
fn hf_save_options_are_written() {
    let Some(shared) = shared() else { return };
    let m = load_model(&shared.join("fixtures/tiny-llama-tied/model")).unwrap();
    let dir = tmp("opts");
    let opts = SaveOptions {
        dtype: DType::BF16,
        chat_template: Some("{{ x }}".into()),
        add_bos: Some(true),
        ..SaveOptions::from_loaded(&m, DType::BF16)
    };
    hf::save_model(&dir, &m.params, &opts).unwrap();
    let st =
        formats::safetensors_io::SafetensorsFile::open(&dir.join("model.safetensors")).unwrap();
    assert!(
        !st.contains("lm_head.weight").unwrap(),
        "tied model must not store lm_head"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["rope_theta"], 100000.0);
    assert_eq!(cfg["rope_parameters"]["rope_theta"], 100000.0);
    assert_eq!(cfg["tie_word_embeddings"], true);
    let back = load_model(&dir).unwrap();
    assert_eq!(back.chat_template.as_deref(), Some("{{ x }}"));
    assert!(back.add_bos);
    assert!(max_diff(&back.params.data, &m.params.data) < 1e-2);
}

#[test]
fn qkv_bias_model_survives_gguf_and_llama_layout() {
    // A Qwen2-style model (q/k/v biases): the q/k biases must be permuted with their rows.
    let mut cfg = engine::ModelConfig::preset("tiny").unwrap();
    cfg.qkv_bias = true;
    cfg.tied_embeddings = false;
    let mut p = engine::Params::zeros(&cfg).unwrap();
    let mut x = 0x1234_5678u32;
    for v in p.data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *v = (x as f32 / u32::MAX as f32 - 0.5) * 0.2;
    }
    for l in 0..cfg.n_layers {
        for n in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            p.get_mut(&engine::params::names::layer(l, n))
                .unwrap()
                .fill(1.0);
        }
    }
    let dir = tmp("bias");
    let g = dir.join("b.gguf");
    let opts = WriteOptions {
        dtype: GgmlType::F32,
        tokenizer: None,
        chat_template: None,
        name: None,
    };
    gguf::write(&g, &p, &opts).unwrap();
    let back = load_model(&g).unwrap();
    assert!(back.params.config.qkv_bias);
    assert!(back.params.data == p.data);
    let tokens = [1u32, 5, 9, 200, 17, 3];
    assert_eq!(logits(&back.params, &tokens), logits(&p, &tokens));
    // The file holds the q bias in interleaved order: pair (0, 1) of head 0 is (0, head_dim/2).
    let bytes = std::fs::read(&g).unwrap();
    let h = gguf::parse_header(&g, &bytes).unwrap();
    let t = h.tensor("blk.0.attn_q.bias").unwrap();
    let mut raw = vec![0f32; 64];
    gguf::reader::read_tensor_f32(&h, &bytes, t, &mut raw).unwrap();
    let bq = p.get("model.layers.0.self_attn.q_proj.bias").unwrap();
    assert_eq!((raw[0], raw[1], raw[2]), (bq[0], bq[8], bq[1]));
    // GGUF v2 files have the same layout: the version field alone changes.
    let mut v2 = bytes.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let m2 = gguf::parse_model(Path::new("v2.gguf"), &v2).unwrap();
    assert!(m2.params.data == p.data);
    assert!(m2.source.starts_with("gguf v2"));
}
