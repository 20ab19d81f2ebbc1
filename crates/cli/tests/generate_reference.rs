//! The inference engine on real models against references computed elsewhere:
//! transformers on SmolLM2-135M (GGUF Q4_1, dequantized), llama2.c on stories260K, and the
//! PyTorch full-sequence logits of the tiny fixtures (KV-cache decode must reproduce them).

use engine::infer::{generate, GenerateOptions, InferenceSession, Sampler, SamplerConfig};
use std::ops::ControlFlow;

mod common;
use common::{ids, shared};

fn greedy(session: &mut InferenceSession<'_>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut sampler = Sampler::new(SamplerConfig::greedy()).expect("greedy sampler");
    let opts = GenerateOptions {
        max_tokens: n,
        eos_ids: Vec::new(),
    };
    let (out, _) = generate(session, &mut sampler, prompt, &opts, |_, _| {
        ControlFlow::Continue(())
    })
    .expect("generation");
    out
}

#[test]
fn smollm2_logits_and_greedy_match_transformers() {
    let Some(shared) = shared() else { return };
    let model = formats::load_model(&shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("load SmolLM2 GGUF");
    let reference = common::smollm2_reference(&shared);
    let prompts = reference["prompts"].as_array().expect("prompts");
    assert!(!prompts.is_empty());
    for p in prompts {
        let prompt = ids(&p["token_ids"]);
        let mut session = InferenceSession::new(&model.params, 256).expect("session");
        let logits = session.prefill(&prompt).expect("prefill").to_vec();
        let top10 = p["top10"].as_array().expect("top10");
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        for (rank, pair) in top10.iter().enumerate() {
            let want_id = pair[0].as_u64().expect("id") as usize;
            let want_logit = pair[1].as_f64().expect("logit") as f32;
            assert_eq!(order[rank], want_id, "{}: rank {rank}", p["prompt"]);
            let err = (logits[want_id] - want_logit).abs();
            assert!(
                err < 1e-3,
                "{}: logit of {want_id} off by {err}",
                p["prompt"]
            );
        }
        let want = ids(&p["greedy_ids"]);
        session.reset();
        assert_eq!(
            greedy(&mut session, &prompt, want.len()),
            want,
            "{}",
            p["prompt"]
        );
    }
}

#[test]
fn stories260k_greedy_matches_llama2c() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("data/stories260K");
    let model = formats::load_model(&dir.join("stories260K.bin")).expect("load stories260K");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected_greedy_t0_n200_ids.json")).expect("ids file"),
    )
    .expect("ids file is JSON");
    let want = ids(&expected["ids"]);
    let bos = model.bos_token_id.expect("llama2.c models have BOS");
    assert_eq!(want[0], bos);
    let mut session =
        InferenceSession::new(&model.params, model.params.config.max_seq_len).expect("session");
    let got = greedy(&mut session, &[bos], want.len() - 1);
    assert_eq!(got, want[1..]);
}

/// Decode one token at a time through the KV cache and compare every position's logits with
/// the PyTorch full-sequence forward pass stored with the fixture.
#[test]
fn kv_cache_decode_matches_pytorch_logits() {
    let Some(shared) = shared() else { return };
    for name in ["tiny-llama", "tiny-llama-tied"] {
        let dir = shared.join("fixtures").join(name);
        let model = formats::load_model(&dir.join("model")).expect("load fixture model");
        let batch = formats::safetensors_io::SafetensorsFile::open(&dir.join("batch.safetensors"))
            .expect("batch.safetensors");
        let st = batch.parse().expect("batch parses");
        let tokens = st.tensor("tokens").expect("tokens tensor");
        let (b, t1) = (tokens.shape()[0], tokens.shape()[1]);
        let toks: Vec<u32> = tokens
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
            .collect();
        let fb = formats::safetensors_io::SafetensorsFile::open(
            &dir.join("forward_backward.safetensors"),
        )
        .expect("forward_backward.safetensors");
        let (shape, logits) = fb.read_any_f32("logits").expect("logits");
        let (t, v) = (shape[1], shape[2]);
        assert_eq!(shape[0], b);
        for row in 0..b {
            let seq = &toks[row * t1..row * t1 + t];
            let mut s = InferenceSession::new(&model.params, t).expect("session");
            let first = s.prefill(&seq[..1]).expect("first token").to_vec();
            let mut worst = first
                .iter()
                .zip(&logits[row * t * v..row * t * v + v])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            for (i, &tok) in seq.iter().enumerate().skip(1) {
                let got = s.decode(tok).expect("decode");
                let want = &logits[(row * t + i) * v..(row * t + i + 1) * v];
                for (a, b) in got.iter().zip(want) {
                    worst = worst.max((a - b).abs());
                }
            }
            assert!(worst < 1e-4, "{name} row {row}: max logit error {worst}");
            s.reset();
            let all = s.prefill_all_logits(seq).expect("batched prefill");
            let want = &logits[row * t * v..(row + 1) * t * v];
            let worst = all
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-4,
                "{name} row {row}: batched prefill error {worst}"
            );
        }
    }
}
