//! The real SmolLM2-135M Q4_1 GGUF (98 MB): loaded once, checked against numbers computed
//! independently (Python `gguf` + numpy, see tests/data/make_reference.py) and against
//! transformers' logits, then written back as GGUF F32 and read again bitwise.

mod common;
use common::*;
use formats::gguf::{self, GgmlType, WriteOptions};
use formats::{load_model, TokenizerSource};

#[test]
fn smollm2_q4_1_gguf() {
    let Some(shared) = shared() else { return };
    let path = shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let m = load_model(&path).unwrap();
    let c = &m.params.config;
    assert_eq!(shape(c), [576, 1536, 30, 9, 3, 49152, 8192]);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.norm_eps, 1e-5);
    assert!(c.tied_embeddings && !c.qkv_bias);
    assert_eq!(m.params.data.len(), 134_515_008);
    assert_eq!(m.source, "gguf v3 Q4_1 +F32 +Q8_0");
    assert_eq!(
        (
            m.bos_token_id,
            m.eos_token_ids.clone(),
            m.pad_token_id,
            m.add_bos
        ),
        (Some(1), vec![2], Some(2), false)
    );
    assert_eq!(m.eos_token.as_deref(), Some("<|im_end|>"));
    assert!(m.chat_template.as_deref().unwrap().contains("<|im_start|>"));
    let Some(TokenizerSource::Gguf {
        model,
        pre,
        tokens,
        merges,
        token_types,
        scores,
        unk,
        ..
    }) = &m.tokenizer
    else {
        panic!("no gguf tokenizer")
    };
    assert_eq!((model.as_str(), pre.as_deref()), ("gpt2", Some("smollm")));
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens[504], "The");
    assert_eq!(tokens[3575], "Ġcapital");
    assert_eq!(merges.as_ref().unwrap().len(), 48900);
    assert_eq!(token_types.as_ref().unwrap().len(), 49152);
    assert!(scores.is_none());
    assert_eq!(*unk, Some(0));

    // Dequantized values (q/k already back in the rotate-half order) vs gguf-py + numpy.
    let refs: serde_json::Value =
        serde_json::from_str(include_str!("data/smollm2_q4_1_tensors_gguf_py.json")).unwrap();
    for (name, r) in refs.as_object().unwrap() {
        let t = m.params.get(name).unwrap();
        for pair in r["at"].as_array().unwrap() {
            let (i, v) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap() as f32,
            );
            assert_eq!(t[i], v, "{name}[{i}]");
        }
        let sum: f64 = t.iter().map(|&x| x as f64).sum();
        let abs: f64 = t.iter().map(|&x| x.abs() as f64).sum();
        let want_abs = r["abs_sum"].as_f64().unwrap();
        assert!(
            (sum - r["sum"].as_f64().unwrap()).abs() < 1e-6 * want_abs,
            "{name} sum"
        );
        assert!((abs - want_abs).abs() < 1e-9 * want_abs, "{name} abs sum");
    }

    // transformers' next-token logits for the first reference prompt.
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("fixtures/smollm2/reference.json")).unwrap(),
    )
    .unwrap();
    let p = &reference["prompts"][0];
    let ids: Vec<u32> = p["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let l = logits(&m.params, &ids);
    let last = &l[(ids.len() - 1) * 49152..];
    for pair in p["top10"].as_array().unwrap() {
        let (id, v) = (
            pair[0].as_u64().unwrap() as usize,
            pair[1].as_f64().unwrap() as f32,
        );
        assert!(
            (last[id] - v).abs() < 1e-3,
            "token {id}: {} vs {v}",
            last[id]
        );
    }

    // GGUF F32 out and back: bitwise, tokenizer and template intact.
    let dir = tmp("smollm2");
    let out = dir.join("smollm2-f32.gguf");
    let opts = WriteOptions {
        dtype: GgmlType::F32,
        tokenizer: m.tokenizer.as_ref(),
        chat_template: m.chat_template.as_deref(),
        name: Some("SmolLM2-135M-Instruct"),
    };
    gguf::write(&out, &m.params, &opts).unwrap();
    let back = load_model(&out).unwrap();
    assert!(
        back.params.data == m.params.data,
        "F32 GGUF round trip not bitwise"
    );
    assert_eq!(back.tokenizer, m.tokenizer);
    assert_eq!(back.chat_template, m.chat_template);
    assert_eq!(
        (back.bos_token_id, back.eos_token_ids.clone(), back.add_bos),
        (Some(1), vec![2], false)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quant_blocks_match_gguf_py() {
    // Random blocks (sane f16 scales) dequantized by the `gguf` Python package.
    let refs: serde_json::Value =
        serde_json::from_str(include_str!("data/quant_blocks_gguf_py.json")).unwrap();
    let types = [
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_K", GgmlType::Q4K),
        ("Q5_K", GgmlType::Q5K),
        ("Q6_K", GgmlType::Q6K),
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::BF16),
    ];
    for (name, ty) in types {
        let r = &refs[name];
        let hex = r["hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want: Vec<f32> = r["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            ty.bytes_for(want.len() as u64),
            Some(bytes.len() as u64),
            "{name}"
        );
        let mut got = vec![0.0; want.len()];
        gguf::quant::dequantize(ty, &bytes, &mut got);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name}[{i}]: {a} vs {b}"
            );
        }
    }
}
