//! Files our own quantizers write, checked against transformers' reference
//! (`fixtures/smollm2/reference.json`, computed on SmolLM2 Q4_1 dequantized to f32 — which is
//! also the f32 source the exports start from, so the reference is exact for that source).
//!
//! For Q8_0, Q4_K (the Q4_K_M mix) and Q6_K: the exported file's own tokenizer gives the
//! reference prompt ids, and both the f32 path (`formats::load_model`) and the quantized path
//! (`load_quant_model`) give top-10 logits and greedy tokens within the bounds below.
//! About 70 s (the test profile is optimised) on 2 busy cores (`cargo test --release -p neuralforge --test
//! export_quantized`); skips without ../shared.

use engine::infer::{generate, GenerateOptions, InferenceSession, Sampler, SamplerConfig};
use formats::gguf::{self, GgmlType};
use std::ops::ControlFlow;

mod common;
use common::{ids, shared};

/// Per prompt: worst top-10 logit error, reference top-1 kept, top-10 overlap, and how many
/// greedy tokens agree with the reference before the first difference.
#[derive(Debug)]
struct Agreement {
    worst_logit_err: f32,
    top1_same: bool,
    /// The reference's margin of its top-1 over its top-2 logit at the first position.
    top1_margin: f32,
    overlap: usize,
    greedy_prefix: usize,
}

fn agreement(mut session: InferenceSession<'_>, p: &serde_json::Value) -> Agreement {
    let prompt = ids(&p["token_ids"]);
    let logits = session.prefill(&prompt).expect("prefill").to_vec();
    let top10: Vec<(usize, f32)> = p["top10"]
        .as_array()
        .expect("top10")
        .iter()
        .map(|x| {
            (
                x[0].as_u64().expect("id") as usize,
                x[1].as_f64().expect("logit") as f32,
            )
        })
        .collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let worst = top10
        .iter()
        .map(|&(id, want)| (logits[id] - want).abs())
        .fold(0f32, f32::max);
    let overlap = order[..10]
        .iter()
        .filter(|i| top10.iter().any(|(id, _)| id == *i))
        .count();
    let want = ids(&p["greedy_ids"]);
    session.reset();
    let mut sampler = Sampler::new(SamplerConfig::greedy()).expect("greedy sampler");
    let opts = GenerateOptions {
        max_tokens: want.len(),
        eos_ids: Vec::new(),
    };
    let (got, _) = generate(&mut session, &mut sampler, &prompt, &opts, |_, _| {
        ControlFlow::Continue(())
    })
    .expect("generation");
    Agreement {
        worst_logit_err: worst,
        top1_same: order[0] == top10[0].0,
        top1_margin: top10[0].1 - top10[1].1,
        overlap,
        greedy_prefix: got.iter().zip(&want).take_while(|(a, b)| a == b).count(),
    }
}

/// Bounds per exported type, for both paths: the worst top-10 logit error (logits of
/// ~13-17), and the greedy tokens (of 32) that must follow the reference before a near-tie
/// may send the text elsewhere. Measured (2026-12-02; f32 path / quantized path, France
/// prompt then robot prompt): Q8_0 0.23/0.29 and 0.08/0.29, greedy 32/32 and 6/6; Q6_K
/// 0.59/0.69 and 0.18/0.31, greedy 32/5 and 6/6; Q4_K 1.65/1.98 and 1.19/1.62, greedy 10/10
/// and 3/3 (after the 16-bit activations landed, the quantized path on Q4_K takes the robot
/// prompt's other near-tied first token: the reference puts its top two 0.33 apart, well
/// inside the 2.5 bound). Q4_K is mostly Q5_0 here (576-wide rows are not whole 256-blocks) and re-rounds
/// weights that already sit on Q4_1's grid, hence its larger error. The bounds leave room for
/// the kernels' f32 summation order (near-ties in the greedy text).
struct Bounds {
    dtype: GgmlType,
    logit_tol: f32,
    greedy_min: usize,
}

const BOUNDS: [Bounds; 3] = [
    Bounds {
        dtype: GgmlType::Q8_0,
        logit_tol: 0.6,
        greedy_min: 4,
    },
    Bounds {
        dtype: GgmlType::Q6K,
        logit_tol: 1.0,
        greedy_min: 4,
    },
    Bounds {
        dtype: GgmlType::Q4K,
        logit_tol: 2.5,
        greedy_min: 2,
    },
];

#[test]
fn exported_q8_0_q4_k_q6_k_match_transformers() {
    let Some(shared) = shared() else { return };
    let src = formats::load_model(&shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("load SmolLM2");
    let reference = common::smollm2_reference(&shared);
    let prompts = reference["prompts"].as_array().expect("prompts");
    let dir = common::tmp("export", "quantized");
    let mut failures = Vec::new();
    for b in BOUNDS {
        let file = dir.join(format!("smol-{}.gguf", b.dtype.name()));
        let t0 = std::time::Instant::now();
        gguf::write(
            &file,
            &src.params,
            &gguf::WriteOptions {
                dtype: b.dtype,
                tokenizer: src.tokenizer.as_ref(),
                chat_template: src.chat_template.as_deref(),
                name: Some("SmolLM2-135M-Instruct"),
            },
        )
        .expect("write GGUF");
        let header = gguf::read_header(&file).expect("header");
        let mut types: Vec<&str> = header.tensors.iter().map(|t| t.ggml_type.name()).collect();
        types.sort();
        types.dedup();
        eprintln!(
            "{}: written in {:.1?}, {} bytes, tensor types {types:?}",
            b.dtype.name(),
            t0.elapsed(),
            std::fs::metadata(&file).expect("file").len()
        );
        assert!(types.contains(&b.dtype.name()), "{types:?}");
        let tok = data::Tokenizer::from_path(&file).expect("tokenizer of the exported file");
        let f32_model = formats::load_model(&file).expect("load f32");
        let quant = gguf::load_quant_model(&file).expect("load quantized");
        for p in prompts {
            let text = p["prompt"].as_str().expect("prompt text");
            assert_eq!(
                tok.encode(text, f32_model.add_bos).expect("encode"),
                ids(&p["token_ids"]),
                "{}: prompt ids",
                b.dtype.name()
            );
            let paths = [
                (
                    "f32",
                    InferenceSession::new(&f32_model.params, 256).expect("session"),
                ),
                (
                    "quantized",
                    InferenceSession::new(&quant.model, 256).expect("session"),
                ),
            ];
            for (path, session) in paths {
                let a = agreement(session, p);
                eprintln!("{} {path} {text:?}: {a:?}", b.dtype.name());
                // A first position whose top two the reference separates by less than the
                // logit bound is a near-tie: either order is within the bound, so neither the
                // top-1 nor the greedy text can be required to follow it there.
                let near_tie = a.top1_margin <= b.logit_tol;
                let first_token_ok = a.top1_same || near_tie;
                // Once a near-tie went the other way the greedy text follows another branch.
                let greedy_ok = a.greedy_prefix >= b.greedy_min || !a.top1_same;
                let ok = a.worst_logit_err <= b.logit_tol
                    && first_token_ok
                    && a.overlap >= 8
                    && greedy_ok;
                if !ok {
                    failures.push(format!("{} {path} {text:?}: {a:?}", b.dtype.name()));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "outside the bounds: {failures:#?}");
}

/// `export --format ollama`: a folder with model.gguf (in the requested type) and a
/// Modelfile; an existing output is refused (exit 7) unless --force. The tiny fixture has no
/// chat template, so the Modelfile passes prompts through as they are.
#[test]
fn ollama_export_writes_gguf_and_modelfile_and_refuses_overwrite() {
    let Some(shared) = shared() else { return };
    let src = shared.join("fixtures/tiny-llama/model");
    let dir = common::tmp("export", "ollama");
    let out = dir.join("ollama");
    let args = |force: bool| {
        let mut a = vec![
            "export",
            src.to_str().expect("utf-8 path"),
            "--format",
            "ollama",
            "--dtype",
            "q8_0",
            "--out",
            out.to_str().expect("utf-8 path"),
        ];
        if force {
            a.push("--force");
        }
        common::nf(&a)
    };
    let (ok, _, err) = args(false);
    assert!(ok, "export failed: {err}");
    let mf = std::fs::read_to_string(out.join("Modelfile")).expect("Modelfile");
    assert!(mf.contains("\nFROM ./model.gguf\n"), "{mf}");
    assert!(mf.contains("TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n"), "{mf}");
    let h = gguf::read_header(&out.join("model.gguf")).expect("model.gguf header");
    let q = h.tensor("blk.0.attn_q.weight").expect("attn_q in the GGUF");
    assert_eq!(q.ggml_type, GgmlType::Q8_0);
    // hidden 176 is not a multiple of 32: ffn_down rows fall back to F16, as in llama.cpp.
    let down = h.tensor("blk.0.ffn_down.weight").expect("ffn_down");
    assert_eq!(down.ggml_type, GgmlType::F16);
    formats::load_model(&out.join("model.gguf")).expect("the GGUF loads");
    let (ok, _, err) = args(false);
    assert!(
        !ok && err.contains("--force"),
        "second export not refused: {err}"
    );
    let (ok, _, err) = args(true);
    assert!(ok, "--force export failed: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
