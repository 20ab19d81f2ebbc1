//! Q2_K and Q3_K, the types we read but do not write, on a file made by llama.cpp's own
//! quantizer (tests/data/make_tiny_q2k_q3k.py: dim 256, so every matrix is in K-quant
//! blocks, q/v/up in Q2_K and the rest in Q3_K). Checked against gguf-py's dequantization,
//! then the quantized loader's repacking (Q3_K -> Q6_K exact, Q2_K -> Q8_0 within half an
//! 8-bit step) against the f32 loader, matrix by matrix and through a forward pass.

use engine::infer::InferenceSession;
use engine::quant::QType;
use formats::gguf::load_quant_model;
use formats::load_model;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tiny-q2k-q3k.gguf"
    ))
}

/// (our name, GGUF type, sum, sum of squares) of gguf-py's dequantized values; both sums
/// ignore the RoPE row order, which differs between the file and our layout.
const GGUF_PY_SUMS: [(&str, &str, f64, f64); 8] = [
    (
        "model.embed_tokens.weight",
        "Q3_K",
        8.116736412e+00,
        2.100833090e+01,
    ),
    (
        "model.layers.0.self_attn.k_proj.weight",
        "Q3_K",
        7.702109337e+00,
        8.335305135e+01,
    ),
    (
        "model.layers.0.self_attn.o_proj.weight",
        "Q3_K",
        -1.745911264e+01,
        1.648288911e+02,
    ),
    (
        "model.layers.0.self_attn.q_proj.weight",
        "Q2_K",
        -1.079715729e+01,
        1.721441188e+02,
    ),
    (
        "model.layers.0.self_attn.v_proj.weight",
        "Q2_K",
        -1.392322159e+01,
        8.632655673e+01,
    ),
    (
        "model.layers.0.mlp.down_proj.weight",
        "Q3_K",
        3.840104723e+01,
        1.647807460e+02,
    ),
    (
        "model.layers.0.mlp.gate_proj.weight",
        "Q3_K",
        1.368270922e+01,
        1.642969437e+02,
    ),
    (
        "model.layers.0.mlp.up_proj.weight",
        "Q2_K",
        -6.975086212e+00,
        1.729185314e+02,
    ),
];

#[test]
fn q2_k_and_q3_k_dequantize_as_gguf_py_does() {
    let m = load_model(&fixture()).expect("load f32");
    assert_eq!(m.source, "gguf v3 Q3_K +F32 +Q2_K");
    for (name, _, sum, sq) in GGUF_PY_SUMS {
        let v = m.params.get(name).expect(name);
        let s: f64 = v.iter().map(|&x| x as f64).sum();
        let q: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
        // gguf-py printed 10 significant digits.
        assert!(
            (s - sum).abs() <= 1e-7 + sum.abs() * 1e-9,
            "{name}: sum {s} vs {sum}"
        );
        assert!((q - sq).abs() <= sq * 1e-9, "{name}: squares {q} vs {sq}");
    }
}

#[test]
fn quantized_loader_repacks_q3_k_exactly_and_q2_k_within_half_a_step() {
    let f = load_model(&fixture()).expect("load f32");
    let q = load_quant_model(&fixture()).expect("load quantized");
    assert!(
        q.meta
            .source
            .ends_with("Q3_K repacked as Q6_K, Q2_K repacked as Q8_0)"),
        "{}",
        q.meta.source
    );
    let l = &q.model.layers[0];
    let mats = [
        (GGUF_PY_SUMS[0], &q.model.embedding),
        (GGUF_PY_SUMS[1], &l.wk),
        (GGUF_PY_SUMS[2], &l.wo),
        (GGUF_PY_SUMS[3], &l.wq),
        (GGUF_PY_SUMS[4], &l.wv),
        (GGUF_PY_SUMS[5], &l.w_down),
        (GGUF_PY_SUMS[6], &l.w_gate),
        (GGUF_PY_SUMS[7], &l.w_up),
    ];
    for ((name, ty, _, _), m) in mats {
        let want = f.params.get(name).expect(name);
        let got = m.to_f32();
        if ty == "Q3_K" {
            assert_eq!(m.qtype(), QType::Q6K, "{name}");
            assert_eq!(got, want, "{name}: Q3_K -> Q6_K must keep every value");
        } else {
            assert_eq!(m.qtype(), QType::Q8_0, "{name}");
            assert!(m.is_interleaved(), "{name}");
            for (w, g) in want.chunks(32).zip(got.chunks(32)) {
                let amax = w.iter().fold(0f32, |a, v| a.max(v.abs()));
                // Half a Q8_0 step (amax / 127 / 2) plus the f16 rounding of the step.
                let bound = amax / 254.0 + amax * 1e-3;
                for (a, b) in w.iter().zip(g) {
                    assert!((a - b).abs() <= bound, "{name}: {a} -> {b} (bound {bound})");
                }
            }
        }
    }

    // The same forward pass through the f32 values and through the loaded model. What
    // separates them: the 8-bit activations the K-quant kernels use (1/254 of each 256-block's
    // largest value, in the five Q6_K matrices) and the Q2_K matrices' requantization; a
    // wrong row order or interleave would move the logits by their whole size.
    let tokens: Vec<u32> = (0..24).map(|i| (i * 7 + 3) % 32).collect();
    let dense = InferenceSession::new(&f.params, 64)
        .expect("f32 session")
        .prefill_all_logits(&tokens)
        .expect("f32 prefill");
    let quant = InferenceSession::new(&q.model, 64)
        .expect("quantized session")
        .prefill_all_logits(&tokens)
        .expect("quantized prefill");
    let scale = dense.iter().fold(0f32, |a, v| a.max(v.abs()));
    let worst = dense
        .iter()
        .zip(&quant)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    eprintln!("logits: max |f32 - quantized| {worst:.3e}, max |logit| {scale:.3e}");
    // Measured: 1.7 % of the largest logit.
    assert!(
        worst <= 0.03 * scale,
        "{worst} against logits up to {scale}"
    );
}
